"""Batch forming in the scheduler, with a runtime that records what it is given."""

from __future__ import annotations

import asyncio

import numpy as np

from embedrpc.service.core.metrics import Metrics
from embedrpc.service.core.scheduler import PICK_WINDOW, Scheduler
from embedrpc.service.runtimes.batching import BatchPolicy
from embedrpc.service.runtimes.interface import Runtime


class Recorder(Runtime):
    name, precision, artifact = "recorder", "fp32", "none"

    def __init__(self, pads: bool, ratio: float | None, max_sequences: int | None = None,
                 budget: int = 4096):
        self.policy = BatchPolicy(budget, packed=not pads, max_sequences=max_sequences,
                                  max_padding_ratio=ratio)
        self.batches: list[list[int]] = []

    def embed_batch(self, sequences, task=None):
        self.batches.append([len(s) for s in sequences])
        return np.array([[len(s), 1.0] for s in sequences], dtype=np.float32)


def run(runtime: Recorder, lengths: list[int], max_queue: int = 100) -> list[list[int]]:
    """Queue one request per length before the loop starts; return the batches formed."""

    async def main():
        scheduler = Scheduler(runtime, max_queue=max_queue, metrics=Metrics())
        jobs = [asyncio.ensure_future(scheduler.embed([[1] * n])) for n in lengths]
        await asyncio.sleep(0)  # every request queued
        scheduler.start()
        results = await asyncio.gather(*jobs)
        await scheduler.close()
        assert [int(r[0, 0]) for r in results] == lengths  # each got its own vector back

    asyncio.run(main())
    return runtime.batches


def test_cpu_padding_bound_keeps_lengths_apart():
    batches = run(Recorder(pads=True, ratio=1.25), [512, 16, 480, 14, 16, 500])
    assert [sorted(b) for b in batches] == [[480, 500, 512], [14, 16, 16]]


def test_unbounded_padding_fills_the_budget():
    batches = run(Recorder(pads=True, ratio=None), [512, 16, 480, 14, 16, 500])
    assert sorted(map(sorted, batches)) == [sorted([512, 16, 480, 14, 16, 500])]


def test_packed_runtime_ignores_padding_and_respects_budget():
    batches = run(Recorder(pads=False, ratio=None, max_sequences=3, budget=400),
                  [300, 20, 250, 30, 10])
    assert all(sum(b) <= 400 and len(b) <= 3 for b in batches)
    assert sorted(n for b in batches for n in b) == [10, 20, 30, 250, 300]
    assert batches[0][0] == 300  # the oldest input leads the first batch


def test_offline_planning_forms_the_batches_the_scheduler_forms():
    """Runtime.embed (validation, the benchmark's raw mode) batches as serving does."""
    lengths = [512, 16, 480, 14, 16, 500, 30, 200]
    for runtime in (Recorder(pads=True, ratio=1.25), Recorder(pads=False, ratio=None,
                                                              max_sequences=3, budget=600)):
        served = run(runtime, lengths)
        runtime.batches = []
        runtime.embed([[1] * n for n in lengths])
        assert runtime.batches == served


def test_a_pick_looks_at_the_oldest_window_only():
    """Bounded work per batch however deep the queue: the perfect length match queued after
    the window waits for a later batch."""
    lengths = [100] + [5] * PICK_WINDOW + [100]
    batches = run(Recorder(pads=True, ratio=None), lengths, max_queue=len(lengths))
    assert batches[0].count(100) == 1 and len(batches[0]) == 4096 // 100
