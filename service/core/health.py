"""Whether this server serves: the one owner of that answer.

Two things can take a server out of service: its runtime (an inference worker that crashed and
is restarting says so through `Runtime.health()`) and a run of failed batches (three in a row:
the artifact or the runtime is broken, though it did not crash). Health combines both and
tells the fronts (gRPC health, HTTP /health) whenever the answer changes; callable from any
thread.
"""

from __future__ import annotations

import threading
from typing import Callable

from embedrpc.service.runtimes.interface import Runtime

FAILURES_BEFORE_NOT_SERVING = 3


class Health:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._lock = threading.Lock()
        self._failures = 0
        self._published = True  # a server starts serving; changes are published
        self._listeners: list[Callable[[bool], None]] = []
        runtime.watch(self.changed)

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """`listener(serving)` is called with every change of the answer (from any thread)."""
        self._listeners.append(listener)

    @property
    def serving(self) -> bool:
        return self.runtime.health().serving and self._failures < FAILURES_BEFORE_NOT_SERVING

    @property
    def reason(self) -> str:
        """Why the server does not serve ('' when it does)."""
        runtime = self.runtime.health()
        if not runtime.serving:
            return runtime.reason
        if self._failures >= FAILURES_BEFORE_NOT_SERVING:
            return f"the last {self._failures} batches failed"
        return ""

    def batch_succeeded(self) -> None:
        self._failures = 0
        self.changed()

    def batch_failed(self) -> None:
        """A batch failed inside the runtime (not because its worker was down)."""
        self._failures += 1
        self.changed()

    def changed(self) -> None:
        """Something the answer depends on changed: publish the answer if it is new."""
        with self._lock:
            serving = self.serving
            if serving == self._published:
                return
            self._published = serving
            listeners = list(self._listeners)
        for listener in listeners:
            listener(serving)
