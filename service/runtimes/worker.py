"""The inference runtime in a child process, so a native crash costs a batch, not the server.

`WorkerRuntime` is a `Runtime` like any other (same policy, same vectors): each batch's token
ids go to the worker over a pipe and its vectors come back (a few kB per text, nothing next to
the forward pass). When the worker dies (SIGSEGV in a kernel, SIGKILL by the OOM killer), the
batch in flight fails as UNAVAILABLE naming the signal, health turns NOT_SERVING, and a new
worker is started; repeated crashes back off (1 s, doubling to 60 s) and stay NOT_SERVING,
with the reason in the log, until a worker starts and serves again. While a worker is down or
starting, every batch is answered UNAVAILABLE at once ("restarting; retry"), never held. A
worker that does not say it is ready within START_TIMEOUT_S is killed: a start that hangs is a
failed start.

Wire format, little-endian. Request: uint32 count, uint32 total tokens, uint32 task bytes,
the task in UTF-8 (empty: the default), count uint32 lengths, total int32 token ids. Reply:
uint32 status (0 ok, 1 error) and uint32 size, then `size` bytes:
for a batch, uint32 rows, uint32 columns and float32 values; for the first reply (ready), a JSON
description of the runtime; for an error, its message in UTF-8.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from embedrpc.service.runtimes.batching import BatchPolicy
from embedrpc.service.runtimes.interface import (
    Runtime,
    RuntimeFailure,
    RuntimeHealth,
    RuntimeOptions,
    RuntimeUnavailable,
    task_of,
)
from embedrpc.service.runtimes.isolation import signal_name

log = logging.getLogger("embedrpc.worker")
OK, ERROR = 0, 1
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0
STABLE_AFTER_S = 60.0  # a worker that lived this long resets the backoff
START_TIMEOUT_S = 600.0  # loading the largest artifact on a slow host takes a minute


class WorkerRuntime(Runtime):
    def __init__(self, bundle_root: Path, artifact: str, kind: str, options: RuntimeOptions,
                 start_timeout: float = START_TIMEOUT_S):
        self._spec = {"bundle": str(bundle_root), "artifact": artifact, "kind": kind,
                      "options": asdict(options)}
        self._start_timeout = start_timeout
        self._lock = threading.Lock()  # one batch at a time, and the worker it runs on
        self._process: subprocess.Popen | None = None
        self._starting: subprocess.Popen | None = None  # a worker not ready yet
        self._down_reason = ""
        self._watchers: list[Callable[[], None]] = []
        self._closing = False
        self._backoff = FIRST_BACKOFF_S
        description = self._start()  # a worker that cannot start fails the server's start
        self.name, self.precision = description["name"], description["precision"]
        self.artifact = description["artifact"]
        self.policy = BatchPolicy(**description["policy"])
        self.tasks = tuple(description["tasks"])

    # -- Runtime ------------------------------------------------------------------------------
    def embed_batch(self, sequences: list[list[int]], task: str | None = None) -> np.ndarray:
        task = task_of(self, task)  # refused here, before the worker sees it
        with self._lock:
            process = self._process
            if process is None:
                raise RuntimeUnavailable(f"the inference worker is restarting "
                                         f"({self._down_reason}); retry")
            try:
                _send_batch(process.stdin, sequences, task)
                status, body = _receive(process.stdout)
            except (BrokenPipeError, EOFError, ValueError):
                reason = self._crashed(process)
                raise RuntimeUnavailable(f"the inference worker {reason}; it is being "
                                         f"restarted, retry") from None
        if status == ERROR:
            raise RuntimeFailure(body.decode("utf-8", "replace"))
        rows, columns = struct.unpack_from("<II", body)
        return np.frombuffer(body, np.float32, rows * columns, 8).reshape(rows, columns).copy()

    def health(self) -> RuntimeHealth:
        if self._process is None:
            return RuntimeHealth(False, f"the inference worker {self._down_reason}")
        return RuntimeHealth(True)

    def watch(self, on_change: Callable[[], None]) -> None:
        self._watchers.append(on_change)

    def close(self) -> None:
        self._closing = True
        starting = self._starting
        if starting is not None:
            starting.kill()
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.stdin.close()  # the worker's signal to exit
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process else None

    # -- the worker's life --------------------------------------------------------------------
    def _start(self) -> dict:
        """A new worker, installed once it says it is ready; the lock is not held meanwhile, so
        batches are told "restarting" instead of waiting."""
        process = subprocess.Popen([sys.executable, "-m", __name__, json.dumps(self._spec)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._starting = process
        deadline = threading.Timer(self._start_timeout, process.kill)
        deadline.daemon = True
        deadline.start()
        try:
            status, body = _receive(process.stdout)
        except (EOFError, ValueError):
            process.wait()
            reason = f"did not start within {self._start_timeout:.0f} s" \
                if not deadline.is_alive() else f"{_exit_reason(process)} while starting"
            raise RuntimeFailure(f"the inference worker {reason}") from None
        finally:
            deadline.cancel()
            self._starting = None
        if status == ERROR:
            process.wait()
            raise RuntimeFailure(body.decode("utf-8", "replace"))
        with self._lock:
            if self._closing:
                process.kill()
                raise RuntimeFailure("the runtime was closed while its worker started")
            self._process, self._started = process, time.monotonic()
        threading.Thread(target=self._watch_exit, args=(process,), daemon=True,
                         name="embedrpc-worker-watch").start()
        log.info("inference worker %d serving %s", process.pid, self._spec["artifact"])
        return json.loads(body)

    def _watch_exit(self, process: subprocess.Popen) -> None:
        process.wait()
        if not self._closing:
            with self._lock:
                self._crashed(process)

    def _crashed(self, process: subprocess.Popen) -> str:
        """Called with the lock held, once per dead worker; returns what happened to it."""
        process.wait()
        reason = _exit_reason(process)
        if self._process is not process:
            return reason
        self._process, self._down_reason = None, reason
        if time.monotonic() - self._started > STABLE_AFTER_S:
            self._backoff = FIRST_BACKOFF_S
        log.error("inference worker %d %s; restarting in %.0f s", process.pid, reason,
                  self._backoff)
        self._notify()
        threading.Thread(target=self._restart, args=(self._backoff,), daemon=True,
                         name="embedrpc-worker-restart").start()
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        return reason

    def _restart(self, delay: float) -> None:
        time.sleep(delay)
        if self._closing:
            return
        try:
            self._start()
        except RuntimeFailure as exc:
            if self._closing:
                return
            self._down_reason = str(exc)
            log.error("%s; trying again in %.0f s", exc, self._backoff)
            threading.Thread(target=self._restart, args=(self._backoff,), daemon=True,
                             name="embedrpc-worker-restart").start()
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            return
        self._notify()

    def _notify(self) -> None:
        for watcher in self._watchers:
            watcher()


def _exit_reason(process: subprocess.Popen) -> str:
    code = process.returncode
    return f"crashed ({signal_name(-code)})" if code is not None and code < 0 \
        else f"exited with status {code}"


# -- the wire --------------------------------------------------------------------------------
def _read_exactly(stream, size: int) -> bytes:
    data = stream.read(size) if size else b""
    if len(data) != size:
        raise EOFError("the other side closed the pipe")
    return data


def _send_batch(stream, sequences: list[list[int]], task: str | None) -> None:
    lengths = np.array([len(s) for s in sequences], "<u4")
    tokens = np.fromiter((t for s in sequences for t in s), "<i4", int(lengths.sum()))
    name = (task or "").encode()
    stream.write(struct.pack("<III", len(sequences), int(lengths.sum()), len(name)) + name
                 + lengths.tobytes() + tokens.tobytes())
    stream.flush()


def _receive(stream) -> tuple[int, bytes]:
    status, size = struct.unpack("<II", _read_exactly(stream, 8))
    if status not in (OK, ERROR):
        raise ValueError(f"unknown reply status {status}")
    return status, _read_exactly(stream, size)


def _reply(stream, status: int, body: bytes) -> None:
    stream.write(struct.pack("<II", status, len(body)) + body)
    stream.flush()


# -- the worker process ----------------------------------------------------------------------
def _serve(spec: dict) -> int:
    """Open the runtime, say so, then answer batches until the parent closes the pipe."""
    from embedrpc.service.bundle.bundle import Bundle
    from embedrpc.service.runtimes.registry import open_runtime

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into the replies
    requests = sys.stdin.buffer
    try:
        runtime = open_runtime(Bundle(Path(spec["bundle"])), spec["artifact"],
                               RuntimeOptions(**spec["options"]), spec["kind"])
    except Exception as exc:  # the parent reports it as the reason the worker cannot start
        _reply(replies, ERROR, f"cannot open {spec['artifact']}: {exc}".encode())
        return 1
    _reply(replies, OK, json.dumps({"name": runtime.name, "precision": runtime.precision,
                                    "artifact": runtime.artifact, "tasks": runtime.tasks,
                                    "policy": asdict(runtime.policy)}).encode())
    while True:
        try:
            count, total, task_bytes = struct.unpack("<III", _read_exactly(requests, 12))
        except EOFError:
            runtime.close()
            return 0
        task = _read_exactly(requests, task_bytes).decode() or None
        lengths = np.frombuffer(_read_exactly(requests, 4 * count), "<u4")
        tokens = np.frombuffer(_read_exactly(requests, 4 * total), "<i4").tolist()
        bounds = [0, *np.cumsum(lengths, dtype=np.int64).tolist()]
        sequences = [tokens[bounds[i]:bounds[i + 1]] for i in range(count)]
        try:
            vectors = np.ascontiguousarray(runtime.embed_batch(sequences, task), np.float32)
        except Exception as exc:  # the batch fails; the worker serves on
            _reply(replies, ERROR, str(exc).encode())
            continue
        _reply(replies, OK, struct.pack("<II", *vectors.shape) + vectors.tobytes())


if __name__ == "__main__":
    sys.exit(_serve(json.loads(sys.argv[1])))
