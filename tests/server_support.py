"""Running real embedrpc servers on loopback inside the test process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import replace

import grpc
import numpy as np

from embedrpc.service.config import ServerConfig
from embedrpc.service.runtimes import registry
from embedrpc.service.runtimes.interface import Runtime, RuntimeFailure
from embedrpc.service.server import EmbedServer
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc


class GatedRuntime(Runtime):
    """A real runtime whose batches can be held at a gate, counted, or made to fail."""

    def __init__(self, inner: Runtime):
        self.inner = inner
        self.name, self.precision, self.artifact = inner.name, inner.precision, inner.artifact
        self.policy = inner.policy  # what production batches by, forwarded whole
        self.tasks = inner.tasks
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a batch reaches the runtime
        self.batches: list[list[list[int]]] = []
        self.fail = False

    def embed_batch(self, sequences, task=None):
        self.batches.append(sequences)
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise RuntimeFailure("test gate never opened")
        if self.fail:
            raise RuntimeFailure("injected failure")
        return self.inner.embed_batch(sequences, task)

    def close(self):
        self.inner.close()


class LoopbackServer:
    """An EmbedServer on 127.0.0.1 with its own event loop thread."""

    def __init__(self, bundle, gated: bool = False, choice=None, **options):
        """`choice`: serve this runtime and artifact without a self-check. `options`: server
        settings, and runtime settings (e.g. batch_invariant) by name."""
        settings = {s.name: options.pop(s.name) for s in registry.settings() if s.name in options}
        config = replace(ServerConfig(str(bundle)), host="127.0.0.1", port=0, metrics_port=0,
                         runtime_settings=settings, **options)
        plain = EmbedServer(config, choice=choice)
        runtime = GatedRuntime(plain.runtime) if gated else None
        self.server = EmbedServer(config, runtime=runtime, choice=plain.choice) if gated else plain
        self.runtime = self.server.runtime
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self.call(self.server.start())
        self.target = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.target)
        self.stub = pb_grpc.EmbeddingServiceStub(self.channel)

    def call(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        self.channel.close()
        self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def metric(self, name: str, **labels) -> float:
        value = self.server.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


def vectors_of(response: pb.EmbedResponse) -> np.ndarray:
    return np.array([list(e.values) for e in response.embeddings], dtype=np.float32)


def packed_of(response: pb.EmbedResponse, dtype) -> np.ndarray:
    return np.vstack([np.frombuffer(e.packed, dtype=dtype) for e in response.embeddings])


class SlowReadingProxy:
    """A TCP proxy on 127.0.0.1 that passes the client's bytes on at once and the server's
    bytes slowly, through a small receive buffer: a loaded sidecar proxy (docker's userland
    proxy, a service mesh), which leaves a large answer waiting in the server's send queue."""

    CHUNK, PAUSE_S = 4096, 0.002

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            upstream = socket.socket()
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.CHUNK)
            upstream.connect(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pass, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pass, args=(upstream, client, True), daemon=True).start()

    def _pass(self, source: socket.socket, sink: socket.socket, slowly: bool) -> None:
        try:
            while data := source.recv(self.CHUNK):
                sink.sendall(data)
                if slowly:
                    time.sleep(self.PAUSE_S)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in (self._listener, *self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
