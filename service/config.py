"""Server configuration: command-line flags, each with an EMBEDRPC_* environment default.
Runtime-specific flags (--kv-type, ...) come from the runtimes' own declarations."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from embedrpc.service.core.cache import DEFAULT_MAX_BYTES as DEFAULT_CACHE_BYTES
from embedrpc.service.runtimes import registry
from embedrpc.service.runtimes.selection import AUTO, runtime_choices


@dataclass(frozen=True)
class ServerConfig:
    bundle: str  # bundle directory, or a hub id / checkpoint directory to export first
    host: str = "0.0.0.0"
    port: int = 50051
    runtime: str = AUTO
    artifact: str | None = None  # force one bundle artifact, e.g. gguf-q4_k_m
    max_batch_tokens: int = 4096
    max_input_tokens: int | None = None  # default: min(manifest's limit, max_batch_tokens)
    max_queue: int = 1024  # inputs waiting for a batch, across all requests
    metrics_port: int = 9090  # 0 disables the Prometheus endpoint; ANY_PORT takes a free one
    metrics_host: str = "127.0.0.1"  # where /metrics listens (0.0.0.0 for a scraper outside)
    threads: int = 0  # inference threads; 0: all cores
    in_process: bool = False  # run the runtime in the server process, without crash isolation
    reflection: bool = False  # gRPC server reflection (lists every service and message)
    tei_compat: bool = False  # also serve text-embeddings-inference's tei.v1 API
    http_port: int | None = None  # the HTTP front (OpenAI and TEI APIs); None: off, 0: any
    served_model_name: str | None = None  # the model's name on the HTTP front (default: its id)
    model_aliases: str = ""  # more names the HTTP front answers to, comma-separated
    tls_cert: str | None = None  # PEM certificate chain: serve TLS
    tls_key: str | None = None  # its PEM private key
    tls_client_ca: str | None = None  # PEM CA: require client certificates it signed (mTLS)
    api_key_file: str | None = None  # one accepted key per line (plus EMBEDRPC_API_KEY)
    grace_seconds: float = 30.0  # how long SIGTERM waits for in-flight work
    max_message_bytes: int = 4 * 1024 * 1024  # largest request received
    max_concurrent_streams: int = 100  # RPCs at once on one connection
    max_connection_age_seconds: float = 0.0  # 0: connections live on; else closed (gracefully)
    keepalive_seconds: float = 60.0  # ping an idle connection this often; dead peers dropped
    export_cache: str | None = None  # where a model id / checkpoint is exported to
    cache: str | None = None  # embedrpc's cache (self-check verdicts); default cache_dir()
    cache_bytes: int = DEFAULT_CACHE_BYTES  # the embedding cache's budget; 0: off
    # The runtimes' own settings by name (their RuntimeSpec.settings), e.g. {"kv_type": "f16"}
    runtime_settings: dict = field(default_factory=dict)


_HELP = {
    "host": "address to listen on", "port": "gRPC port (0: any free port)",
    "runtime": "the runtime to serve with (auto: self-checked choice)",
    "artifact": "serve this bundle artifact",
    "max_batch_tokens": "token budget of one inference batch",
    "max_input_tokens": "longest accepted input (default: the model's, capped at the batch budget)",
    "max_queue": "inputs that may wait; more gives RESOURCE_EXHAUSTED",
    "metrics_port": "Prometheus /metrics port (0: off; 'any': a free port, printed at start)",
    "threads": "inference threads (0: all)",
    "metrics_host": "address the /metrics endpoint listens on",
    "reflection": "serve gRPC server reflection",
    "tei_compat": "also serve the text-embeddings-inference gRPC API (tei.v1) on the same port",
    "http_port": "serve the OpenAI-compatible (/v1/embeddings) and TEI-compatible (/embed) HTTP "
                 "APIs on this port (off unless given; 0: any free port)",
    "served_model_name": "the model's name on the HTTP front, in /v1/models and `model` "
                         "(default: the model id GetInfo reports)",
    "model_aliases": "more model names the HTTP front accepts, comma-separated",
    "tls_cert": "PEM certificate chain to serve TLS with (re-read when it changes)",
    "tls_key": "PEM private key of --tls-cert (re-read when it changes)",
    "tls_client_ca": "PEM CA bundle: require and verify client certificates (mTLS)",
    "api_key_file": "file of accepted API keys, one per line (re-read on change or SIGHUP); "
                    "EMBEDRPC_API_KEY adds one; clients send 'authorization: Bearer <key>'",
    "grace_seconds": "SIGTERM drain time for in-flight requests",
    "in_process": "run inference in the server process instead of a crash-isolated worker "
                  "(a native crash then kills the server)",
    "max_message_bytes": "largest gRPC request message accepted (responses are not capped)",
    "max_concurrent_streams": "most RPCs in flight on one client connection",
    "max_connection_age_seconds": "close connections this old, after their RPCs finish, so "
                                  "load balancers can rebalance (0: never)",
    "keepalive_seconds": "ping idle connections this often and drop those that do not answer; "
                         "clients may ping no more often than every 10 s",
    "export_cache": "directory for bundles exported from a model id or checkpoint",
    "cache": "embedrpc's cache directory: self-check verdicts per host (default "
             "$XDG_CACHE_HOME/embedrpc or ~/.cache/embedrpc)",
    "cache_bytes": "memory for the embedding cache (vectors of texts already embedded, least "
                   "recently used out first); 0 turns it off",
}


ANY_PORT = -1  # a port the system picks; the server prints which


def port_number(text: str) -> int:
    """A port flag's value: a number, or 'any' (ANY_PORT)."""
    return ANY_PORT if text.strip().lower() == "any" else int(text)


def cache_dir(configured: str | None = None) -> Path:
    """Where embedrpc keeps what it can rebuild: EMBEDRPC_CACHE, else the XDG cache home."""
    root = configured or os.environ.get("EMBEDRPC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "embedrpc")
    return Path(root)


def add_arguments(parser: argparse.ArgumentParser, environ=os.environ) -> None:
    parser.add_argument("bundle", nargs="?" if "EMBEDRPC_BUNDLE" in environ else None,
                        default=environ.get("EMBEDRPC_BUNDLE"),
                        help="bundle directory, hub id or checkpoint directory (EMBEDRPC_BUNDLE)")
    for spec in fields(ServerConfig):
        if spec.name in ("bundle", "runtime_settings"):
            continue
        kind = type(spec.default) if isinstance(spec.default, (bool, int, float)) else str
        if spec.name in ("max_input_tokens", "http_port"):
            kind = int
        if spec.name == "metrics_port":
            kind = port_number
        _add_flag(parser, spec.name, spec.default, kind, _HELP[spec.name], environ,
                  runtime_choices() if spec.name == "runtime" else None)
    for setting in registry.settings():
        _add_flag(parser, setting.name, setting.default, type(setting.default), setting.help,
                  environ, setting.choices)


def _add_flag(parser, name: str, default, kind, help_text: str, environ, choices) -> None:
    env = "EMBEDRPC_" + name.upper()
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        parser.add_argument(flag, action="store_true",
                            default=environ.get(env, str(default)).lower() in ("1", "true", "yes"),
                            help=f"{help_text} ({env})")
        return
    value = kind(environ[env]) if env in environ else default
    parser.add_argument(flag, type=kind, default=value, choices=choices,
                        help=f"{help_text} ({env}; default {default})")


def from_arguments(args: argparse.Namespace) -> ServerConfig:
    values = {spec.name: getattr(args, spec.name) for spec in fields(ServerConfig)
              if spec.name != "runtime_settings"}
    settings = {setting.name: getattr(args, setting.name) for setting in registry.settings()}
    return ServerConfig(**values, runtime_settings=settings)
