"""The batching queue between gRPC requests and one runtime.

Inputs of concurrent requests wait in one bounded queue; a single loop forms batches by the
runtime's batch policy (service/runtimes/batching.py: the oldest input first, then those
closest to it in length), runs each batch off the event loop, and hands every vector back to
its request. A request that is cancelled or whose deadline expires leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from embedrpc.service.core.health import Health
from embedrpc.service.core.metrics import Metrics
from embedrpc.service.errors import ErrorKind, RequestError
from embedrpc.service.runtimes.batching import take_batch
from embedrpc.service.runtimes.interface import Runtime, RuntimeFailure, RuntimeUnavailable

PICK_WINDOW = 256  # a batch is formed from this many of the oldest waiting inputs


@dataclass(eq=False)
class _Job:
    future: asyncio.Future
    vectors: list = field(default_factory=list)
    remaining: int = 0


@dataclass(eq=False)
class _Item:
    job: _Job
    index: int
    ids: list[int]
    enqueued: float
    task: str | None  # the task adapter it runs with (None: the default)


def checked_batch(runtime: Runtime, sequences: list[list[int]], task: str | None = None
                  ) -> np.ndarray:
    """One forward pass whose every value is finite: a NaN is a failed batch, never an answer."""
    vectors = runtime.embed_batch(sequences, task)
    if vectors.shape[0] != len(sequences):
        raise RuntimeFailure(f"the runtime returned {vectors.shape[0]} vectors for "
                             f"{len(sequences)} inputs")
    if not np.isfinite(vectors).all():
        raise RuntimeFailure("the runtime returned non-finite values (NaN or infinity); the "
                             "artifact or the runtime is broken")
    return vectors


class Scheduler:
    def __init__(self, runtime: Runtime, *, max_queue: int, metrics: Metrics,
                 health: Health | None = None):
        """Batches follow `runtime.policy`; `max_queue` inputs may wait across requests; each
        batch's outcome is reported to `health`."""
        self.runtime, self.metrics, self.health = runtime, metrics, health
        self.max_queue = max_queue
        self._pending: list[_Item] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="embedrpc-inference")
        self._task: asyncio.Task | None = None
        self._closing = False
        self._room_waiters: list[asyncio.Future] = []  # streams waiting for queue space

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="embedrpc-scheduler")

    async def embed(self, sequences: list[list[int]], wait_for_room: bool = False,
                    task: str | None = None) -> np.ndarray:
        """Vectors for `sequences`, in order, once every one has been through a batch.

        A full queue is RESOURCE_EXHAUSTED at once, or, with `wait_for_room` (a stream's
        requests: their reader then stops reading, which HTTP/2 flow control passes back to
        the client), a wait until the queue has drained enough. Waiting requests take only
        half the queue (or an empty one), so streams never crowd out unary calls.
        """
        while not self._closing and not self._has_room(len(sequences), wait_for_room):
            if not wait_for_room:
                raise RequestError(ErrorKind.RESOURCE_EXHAUSTED,
                                   f"the queue holds {len(self._pending)} of {self.max_queue} "
                                   f"inputs; retry later")
            room = asyncio.get_running_loop().create_future()
            self._room_waiters.append(room)
            await room
        if self._closing:
            raise RequestError(ErrorKind.UNAVAILABLE, "the server is shutting down")
        job = _Job(asyncio.get_running_loop().create_future(), [None] * len(sequences),
                   len(sequences))
        now = time.monotonic()
        self._pending.extend(_Item(job, i, ids, now, task) for i, ids in enumerate(sequences))
        self._queue_changed()
        self._wake.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)
            raise

    async def close(self) -> None:
        """Take no new work, finish what is queued, then stop."""
        self._closing = True
        self._wake_room_waiters()
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _has_room(self, count: int, waiting: bool) -> bool:
        if not waiting:
            return len(self._pending) + count <= self.max_queue
        return len(self._pending) + count <= self.max_queue // 2 or not self._pending

    def _queue_changed(self) -> None:
        self.metrics.queue_depth.set(len(self._pending))
        if len(self._pending) <= self.max_queue // 2:
            self._wake_room_waiters()

    def _wake_room_waiters(self) -> None:
        """Each waiter checks the room again; those that still do not fit wait again."""
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _drop(self, job: _Job) -> None:
        self._pending = [item for item in self._pending if item.job is not job]
        self._queue_changed()

    def _take_batch(self) -> list[_Item]:
        """A batch from the PICK_WINDOW oldest inputs of the oldest input's task (a batch runs
        one adapter): bounded work per pick, however deep the queue (a pick over 10,000 queued
        inputs once took 7.6 ms)."""
        window = self._pending[:PICK_WINDOW]
        task = window[0].task
        same = [i for i, item in enumerate(window) if item.task == task]
        chosen = [same[i] for i in take_batch([len(window[i].ids) for i in same],
                                              self.runtime.policy)]
        taken = set(chosen)
        batch = [window[i] for i in chosen]
        self._pending[:PICK_WINDOW] = [item for i, item in enumerate(window) if i not in taken]
        self._queue_changed()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            started = time.monotonic()
            try:
                vectors = await loop.run_in_executor(self._executor, checked_batch,
                                                     self.runtime, [item.ids for item in batch],
                                                     batch[0].task)
            except Exception as exc:  # any runtime failure fails the batch's requests
                self._fail(batch, exc)
                continue
            self._record(batch, started)
            for item, vector in zip(batch, vectors, strict=True):
                job = item.job
                if job.future.done():  # cancelled or failed meanwhile
                    continue
                job.vectors[item.index] = vector
                job.remaining -= 1
                if job.remaining == 0:
                    job.future.set_result(np.vstack(job.vectors))

    def _record(self, batch: list[_Item], started: float) -> None:
        elapsed = time.monotonic() - started
        tokens = sum(len(item.ids) for item in batch)
        metrics = self.metrics
        metrics.inference_seconds.observe(elapsed)
        metrics.batch_inputs.observe(len(batch))
        metrics.batch_tokens.observe(tokens)
        metrics.batch_requests.observe(len({id(item.job) for item in batch}))
        metrics.inputs.inc(len(batch))
        metrics.tokens.inc(tokens)
        metrics.tokens_per_second.set(tokens / elapsed if elapsed > 0 else 0)
        for item in batch:
            metrics.queue_seconds.observe(started - item.enqueued)
        if self.health:
            self.health.batch_succeeded()

    def _fail(self, batch: list[_Item], exc: Exception) -> None:
        """The batch's requests fail: UNAVAILABLE (retry) when the runtime is down for now, its
        health reported by the runtime itself; INTERNAL otherwise, counted by health (three in
        a row turn it NOT_SERVING until a batch succeeds)."""
        if isinstance(exc, RuntimeUnavailable):
            error = RequestError(ErrorKind.UNAVAILABLE, str(exc))
        else:
            error = RequestError(ErrorKind.INTERNAL, f"inference failed: {exc}")
            if self.health:
                self.health.batch_failed()
        for job in {item.job for item in batch}:
            if not job.future.done():
                job.future.set_exception(error)
            self._drop(job)
