"""Prometheus metrics of one server (its own registry, so several servers can share a process)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("embedrpc_requests", "RPCs by method and status code",
                                ["method", "code"], registry=registry)
        self.inputs = Counter("embedrpc_inputs", "Texts embedded", registry=registry)
        self.tokens = Counter("embedrpc_tokens", "Tokens embedded", registry=registry)
        self.task_inputs = Counter("embedrpc_task_inputs",
                                   "Texts requested by task adapter ('default' without "
                                   "adapters), answered from the cache or not",
                                   ["task"], registry=registry)
        self.cache_hits = Counter("embedrpc_cache_hits",
                                  "Inputs answered without the runtime: kept by the embedding "
                                  "cache, or a duplicate of one being computed", registry=registry)
        self.cache_misses = Counter("embedrpc_cache_misses", "Inputs the runtime computed",
                                    registry=registry)
        self.cache_evictions = Counter("embedrpc_cache_evictions",
                                       "Vectors dropped to keep the cache within its budget",
                                       registry=registry)
        self.cache_bytes = Gauge("embedrpc_cache_bytes", "Bytes the embedding cache holds",
                                 registry=registry)
        self.cache_entries = Gauge("embedrpc_cache_entries", "Vectors the embedding cache holds",
                                   registry=registry)
        self.queue_depth = Gauge("embedrpc_queue_depth", "Inputs waiting for a batch",
                                 registry=registry)
        self.batch_inputs = Histogram("embedrpc_batch_inputs", "Inputs per inference batch",
                                      buckets=_SIZE_BUCKETS, registry=registry)
        self.batch_tokens = Histogram("embedrpc_batch_tokens", "Tokens per inference batch",
                                      buckets=_TOKEN_BUCKETS, registry=registry)
        self.batch_requests = Histogram("embedrpc_batch_requests",
                                        "Distinct requests sharing an inference batch",
                                        buckets=_SIZE_BUCKETS, registry=registry)
        self.queue_seconds = Histogram("embedrpc_queue_seconds",
                                       "Time an input waits for its batch",
                                       buckets=_LATENCY_BUCKETS, registry=registry)
        self.inference_seconds = Histogram("embedrpc_inference_seconds", "Time of one batch",
                                           buckets=_LATENCY_BUCKETS, registry=registry)
        self.request_seconds = Histogram("embedrpc_request_seconds", "Time of one RPC",
                                         ["method"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.tokens_per_second = Gauge("embedrpc_tokens_per_second",
                                       "Tokens per second of the last inference batch",
                                       registry=registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        """Expose /metrics, and nothing else, over HTTP; returns the HTTP server (call
        shutdown() to stop)."""
        registry = self.registry

        class MetricsPage(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server protocol
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass  # scrapes are not news

        server = ThreadingHTTPServer((host, port), MetricsPage)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True,
                         name="embedrpc-metrics").start()
        return server
