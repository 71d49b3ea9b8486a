"""`embedrpc serve`: assemble bundle, runtime, scheduler and servicer into a gRPC server with
health, reflection, Prometheus metrics and a graceful SIGTERM drain."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from embedrpc.service.bundle import parity
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.checksums import FileHashes
from embedrpc.service.bundle.manifest import MANIFEST_NAME, BundleError, Manifest
from embedrpc.service.config import ServerConfig, cache_dir
from embedrpc.service.core.cache import EmbeddingCache, namespace
from embedrpc.service.core.embedder import Embedder, ServingLimits
from embedrpc.service.core.health import Health
from embedrpc.service.core.metrics import Metrics
from embedrpc.service.core.scheduler import Scheduler
from embedrpc.service.errors import EmbedrpcError
from embedrpc.service.fronts import http_openai, http_tei
from embedrpc.service.fronts.drain import Drain
from embedrpc.service.fronts.grpc_embedrpc import EmbeddingServicer
from embedrpc.service.fronts.grpc_tei import SERVICES as TEI_SERVICES
from embedrpc.service.fronts.grpc_tei import TeiFront
from embedrpc.service.fronts.grpc_wire import DrainInterceptor
from embedrpc.service.fronts.http_server import HttpFront, HttpSettings
from embedrpc.service.fronts.security import (
    ApiKeyInterceptor,
    ApiKeys,
    CertificateFiles,
    SecurityError,
)
from embedrpc.service.runtimes import registry
from embedrpc.service.runtimes.interface import Runtime, RuntimeOptions, options_for
from embedrpc.service.runtimes.registry import open_runtime
from embedrpc.service.runtimes.selection import Choice, choose, plan
from embedrpc.service.runtimes.selfcheck import SelfCheck, VerdictCache
from embedrpc.service.runtimes.worker import WorkerRuntime
from embedrpc.v1 import embedding_pb2

log = logging.getLogger("embedrpc")
SERVICE_NAME = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name


def resolve_bundle(target: str, export_cache: str | None = None) -> Path:
    """A bundle directory as is; a hub id or checkpoint exported (once) into the cache."""
    path = Path(target).expanduser()
    if (path / MANIFEST_NAME).is_file():
        return path
    if any(importlib.util.find_spec(name) is None for name in ("torch", "transformers")):
        raise BundleError(f"{target} is not a bundle, and exporting it needs the export extra: "
                          f"pip install 'embedrpc[export]' (or run `embedrpc export` elsewhere)")
    cache = Path(export_cache or Path.home() / ".cache" / "embedrpc" / "bundles")
    key = hashlib.sha256(str(path.resolve() if path.exists() else target).encode()).hexdigest()
    out = cache / f"{Path(target).name}-{key[:12]}"
    if not (out / MANIFEST_NAME).is_file():
        log.info("exporting %s into %s", target, out)
        # A separate process, so that the server itself never imports torch.
        done = subprocess.run([sys.executable, "-m", "embedrpc.service.cli", "export", target,
                               "--out", str(out), "--force"])
        if done.returncode != 0:
            raise BundleError(f"exporting {target} failed (exit {done.returncode})")
    return out


def serving_limits(config: ServerConfig, manifest: Manifest) -> ServingLimits:
    """The longest input defaults to the model's limit capped at the batch budget."""
    max_input = min(config.max_input_tokens or manifest.max_input_tokens,
                    manifest.max_input_tokens)
    if config.max_input_tokens is None:
        max_input = min(max_input, config.max_batch_tokens)
    return ServingLimits(config.max_batch_tokens, config.max_queue, max_input)


def runtime_options(config: ServerConfig, bundle: Bundle, limits: ServingLimits
                    ) -> RuntimeOptions:
    """How the runtime is opened, for serving and for its self-check alike."""
    settings = {setting.name: config.runtime_settings.get(setting.name, setting.default)
                for setting in registry.settings()}
    return options_for(bundle, threads=config.threads, settings=settings,
                       max_batch_tokens=config.max_batch_tokens,
                       max_input_tokens=limits.max_input_tokens,
                       compiled_cache=str(cache_dir(config.cache) / "compiled"))


def choose_runtime(config: ServerConfig, bundle: Bundle, limits: ServingLimits) -> Choice:
    """The selection rule's candidates, self-checked on this host (verdicts cached)."""
    return choose(plan(bundle.manifest, config.runtime, config.artifact),
                  SelfCheck(bundle, runtime_options(config, bundle, limits),
                            VerdictCache(cache_dir(config.cache) / "selfcheck")))


MIN_CLIENT_PING_INTERVAL_MS = 10_000
# A stopping server first refuses new calls until none has arrived for DRAIN_QUIET_S (at most
# DRAIN_QUIET_MOST_S), then lets the calls it serves end; all within the grace period
# (service/fronts/drain.py).
DRAIN_QUIET_S, DRAIN_QUIET_MOST_S = 0.5, 5.0


def open_serving_runtime(config: ServerConfig, bundle: Bundle, choice: Choice,
                         limits: ServingLimits) -> Runtime:
    """The chosen runtime in a crash-isolated worker process (or in this one, if asked)."""
    options = runtime_options(config, bundle, limits)
    if config.in_process:
        return open_runtime(bundle, choice.artifact, options, kind=choice.runtime)
    return WorkerRuntime(bundle.root, choice.artifact, choice.runtime, options)


def unrouted_errors(path: str):
    """The error shape of a path no route takes: OpenAI's under /v1, TEI's elsewhere."""
    return http_openai.ERRORS if path.startswith("/v1/") else http_tei.ERRORS


def channel_options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC core settings: message size, streams per connection, keepalive enforcement and
    connection age (so a load balancer's new replicas get traffic)."""
    options = [("grpc.max_receive_message_length", config.max_message_bytes),
               ("grpc.max_send_message_length", -1),
               ("grpc.max_concurrent_streams", config.max_concurrent_streams),
               ("grpc.keepalive_time_ms", int(config.keepalive_seconds * 1000)),
               ("grpc.keepalive_timeout_ms", 20_000),
               ("grpc.keepalive_permit_without_calls", 1),
               ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
               ("grpc.http2.max_ping_strikes", 2)]
    if config.max_connection_age_seconds > 0:
        options += [("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(config.grace_seconds * 1000))]
    return options


def transport_security(config: ServerConfig) -> tuple[CertificateFiles | None, ApiKeys]:
    """TLS certificates (None: plaintext) and API keys, checked before anything is loaded."""
    if bool(config.tls_cert) != bool(config.tls_key):
        raise SecurityError("TLS needs both --tls-cert and --tls-key")
    if config.tls_client_ca and not config.tls_cert:
        raise SecurityError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
    certificates = CertificateFiles(config.tls_cert, config.tls_key, config.tls_client_ca) \
        if config.tls_cert else None
    return certificates, ApiKeys(config.api_key_file, os.environ.get("EMBEDRPC_API_KEY"))


class EmbedServer:
    def __init__(self, config: ServerConfig, runtime: Runtime | None = None,
                 choice: Choice | None = None):
        """`runtime`/`choice` replace the selected ones (tests wrap a real runtime)."""
        self.config = config
        self.certificates, self.api_keys = transport_security(config)
        self.bundle = Bundle(resolve_bundle(config.bundle, config.export_cache),
                             hashes=FileHashes(cache_dir(config.cache)))
        parity.check(self.bundle)  # what every self-check measures against
        self.limits = serving_limits(config, self.bundle.manifest)
        with ThreadPoolExecutor(1, thread_name_prefix="tokenizer") as loader:
            tokenizer = loader.submit(self.bundle.tokenizer)  # while a runtime is chosen, loads
            try:
                self.choice = choice or choose_runtime(config, self.bundle, self.limits)
                self.bundle.verify([self.choice.artifact])
            except EmbedrpcError:
                if isinstance(tokenizer.exception(), BundleError):
                    raise tokenizer.exception() from None  # the cause, not its consequence
                raise
            self.runtime = runtime or open_serving_runtime(config, self.bundle, self.choice,
                                                           self.limits)
            try:
                self.tokenizer = tokenizer.result()
            except BaseException:  # a tokenizer the manifest disowns: the worker must not stay
                self.runtime.close()
                raise
        self.metrics = Metrics()
        self.grpc_health = HealthServicer()
        self.drain = Drain()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.http: HttpFront | None = None
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self._metrics_http = None

    async def start(self) -> int:
        config, manifest = self.config, self.bundle.manifest
        log.info("runtime %s (artifact %s): %s", self.choice.runtime, self.choice.artifact,
                 self.choice.reason)
        self._loop = asyncio.get_running_loop()
        self.health = Health(self.runtime)
        self.health.subscribe(self._set_serving)
        self.scheduler = Scheduler(self.runtime, max_queue=config.max_queue,
                                   metrics=self.metrics, health=self.health)
        self.embedder = Embedder(manifest, self.tokenizer, self.scheduler, self.choice,
                                 self.limits, self._embedding_cache(config, manifest),
                                 self.metrics)
        self.fronts = [EmbeddingServicer(self.embedder, self.metrics)]
        if config.tei_compat:
            self.fronts.append(TeiFront(self.embedder, self.metrics))
        interceptors = [DrainInterceptor(self.drain), *([ApiKeyInterceptor(self.api_keys)]
                                                        if self.api_keys.required else [])]
        self.server = grpc.aio.server(options=channel_options(config), interceptors=interceptors)
        for front in self.fronts:
            front.add_to(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.grpc_health, self.server)
        if config.reflection:
            reflection.enable_server_reflection(
                [*self.services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME], self.server)
        address = f"[{config.host}]:{config.port}" if ":" in config.host \
            else f"{config.host}:{config.port}"
        self.port = self.server.add_secure_port(address, self.certificates.credentials()) \
            if self.certificates else self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        self.scheduler.start()
        await self.server.start()
        for service in ("", *self.services):
            await self.grpc_health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if config.http_port is not None:
            self.http = self._http_front()
            self.http_port = await self.http.start(
                self.http.app(http_openai.routes(self.http) + http_tei.routes(self.http),
                              unrouted_errors), config.host, config.http_port,
                self.certificates, config.grace_seconds)
        if config.metrics_port:
            self._metrics_http = self.metrics.serve(max(config.metrics_port, 0),
                                                    config.metrics_host)
            self.metrics_port = self._metrics_http.server_address[1]
        log.info("listening on %s:%d (gRPC)%s with %s%s (metrics on %s)", config.host,
                 self.port, f" and {config.host}:{self.http_port} (HTTP)" if self.http else "",
                 "mTLS" if config.tls_client_ca else "TLS" if self.certificates else "plaintext",
                 ", API keys required" if self.api_keys.required else "",
                 f"{config.metrics_host}:{self.metrics_port}/metrics"
                 if self.metrics_port else "off")
        return self.port

    def _embedding_cache(self, config: ServerConfig, manifest: Manifest) -> EmbeddingCache | None:
        """The embedding cache, keyed to this bundle's content and the served artifact's files
        (None when --cache-bytes is 0)."""
        if not config.cache_bytes:
            return None
        artifact = manifest.artifact(self.choice.artifact)
        space = namespace(manifest.source.content_sha256 or manifest.source.model, artifact.name,
                          *(f.sha256 for f in artifact.files),
                          *(f.sha256 for adapter in manifest.adapters for f in adapter.files))
        return EmbeddingCache(config.cache_bytes, space, self.metrics)

    def _http_front(self) -> HttpFront:
        config = self.config
        served = config.served_model_name or self.embedder.info().model
        names = dict.fromkeys([served, *(name.strip() for name in config.model_aliases.split(",")
                                         if name.strip())])
        names.update({f"{served}-{task}": task for task in self.bundle.manifest.tasks})
        return HttpFront(self.embedder, self.metrics, self.health, self.drain, self.api_keys,
                         HttpSettings(config.max_message_bytes, names))

    @property
    def services(self) -> list[str]:
        """Every gRPC service the fronts serve, each with its own health entry."""
        return [SERVICE_NAME, *([s.full_name for s in TEI_SERVICES]
                                if self.config.tei_compat else [])]

    def _set_serving(self, serving: bool) -> None:
        """Publish what Health decided to every front's health entry (from any thread)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving \
            else health_pb2.HealthCheckResponse.NOT_SERVING

        def publish() -> None:
            for service in ("", *self.services):
                asyncio.ensure_future(self.grpc_health.set(service, status))

        self._loop.call_soon_threadsafe(publish)

    async def stop(self, grace: float | None = None) -> None:
        """Health says NOT_SERVING (clients that watch it move away) and new RPCs get
        UNAVAILABLE; once calls stop arriving, open streams stop being read, in-flight RPCs
        finish and their answers reach the clients (up to the grace period), and everything
        shuts down."""
        grace = self.config.grace_seconds if grace is None else grace
        ends = time.monotonic() + grace
        await self.grpc_health.enter_graceful_shutdown()
        self.drain.draining = True
        await self.drain.quiet(DRAIN_QUIET_S, min(grace, DRAIN_QUIET_MOST_S))
        for front in self.fronts:
            front.streams.drain()
        await asyncio.gather(self._stop_grpc(ends), *([self.http.stop()] if self.http else []))
        await self.scheduler.close()
        self.embedder.close()
        self.runtime.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()

    async def _stop_grpc(self, ends: float) -> None:
        """Stop the gRPC server once its calls have ended, so that no connection closes with
        a part of an answer unsent (service/fronts/drain.py says why)."""
        if not await self.drain.finished(ends - time.monotonic()):
            log.warning("the grace period ended with %d call(s) still being served: they are "
                        "cancelled", self.drain.serving)
        await self.server.stop(max(0.0, ends - time.monotonic()))


async def serve(config: ServerConfig) -> None:
    server = EmbedServer(config)
    await server.start()
    if server.metrics_port:
        print(f"embedrpc: metrics on port {server.metrics_port}", file=sys.stderr, flush=True)
    if server.http_port:
        print(f"embedrpc: HTTP on port {server.http_port}", file=sys.stderr, flush=True)
    print(f"embedrpc: serving on port {server.port}", file=sys.stderr, flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.api_keys.reload)
    await stopping.wait()
    log.info("shutting down: draining in-flight requests (up to %ss)", config.grace_seconds)
    await server.stop()
