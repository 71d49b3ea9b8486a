"""The embedding cache: LRU within a byte budget, each distinct miss computed once (within a
request and across requests in flight), a failure not shared, and on every CPU runtime a hit
bit for bit what the miss returned and what a server without the cache returns."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedrpc.service.core.cache import ENTRY_OVERHEAD_BYTES, EmbeddingCache, namespace
from embedrpc.service.core.metrics import Metrics
from embedrpc.service.runtimes.selection import Choice
from embedrpc.v1 import embedding_pb2 as pb

from server_support import LoopbackServer, packed_of, vectors_of

DIM = 8
SPACE = namespace("bundle", "artifact")


class Counting:
    """A compute function: each sequence's vector from its ids, every call recorded."""

    def __init__(self, gate: asyncio.Event | None = None, fail: bool = False):
        self.calls: list[list[list[int]]] = []
        self.gate, self.fail = gate, fail

    async def __call__(self, sequences):
        self.calls.append(sequences)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("injected")
        rows = np.array([[sum(s) + i for i in range(DIM)] for s in sequences], np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def entry_bytes(ids) -> int:
    return len(SPACE) + 1 + 4 * len(ids) + 4 * DIM + ENTRY_OVERHEAD_BYTES


def test_hits_are_the_stored_bytes_and_duplicates_are_computed_once():
    async def scenario():
        metrics = Metrics()
        cache, compute = EmbeddingCache(1 << 20, SPACE, metrics), Counting()
        first = await cache.embed([[1, 2], [3], [1, 2]], None, compute)
        again = await cache.embed([[3], [1, 2], [4]], None, compute)
        return metrics, cache, compute, first, again

    metrics, cache, compute, first, again = asyncio.run(scenario())
    assert compute.calls == [[[1, 2], [3]], [[4]]]  # the duplicate and the kept ones not again
    assert first[0].tobytes() == first[2].tobytes() == again[1].tobytes()
    assert first[1].tobytes() == again[0].tobytes()
    assert len(cache) == 3 and cache.bytes == sum(map(entry_bytes, ([1, 2], [3], [4])))
    value = metrics.registry.get_sample_value
    assert (value("embedrpc_cache_hits_total"), value("embedrpc_cache_misses_total")) == (3, 3)
    assert value("embedrpc_cache_bytes") == cache.bytes


def test_the_task_is_part_of_the_key():
    async def scenario():
        cache, compute = EmbeddingCache(1 << 20, SPACE), Counting()
        await cache.embed([[1, 2]], "retrieval", compute)
        await cache.embed([[1, 2]], "clustering", compute)
        await cache.embed([[1, 2]], None, compute)
        return compute

    assert len(asyncio.run(scenario()).calls) == 3


def test_least_recently_used_goes_first_within_the_budget():
    budget = 2 * entry_bytes([1])

    async def scenario():
        metrics = Metrics()
        cache, compute = EmbeddingCache(budget, SPACE, metrics), Counting()
        for ids in ([1], [2], [1], [3]):  # [2] is the least recently used when [3] arrives
            await cache.embed([ids], None, compute)
        calls = len(compute.calls)
        await cache.embed([[1]], None, compute)
        await cache.embed([[3]], None, compute)
        kept = len(compute.calls) == calls
        await cache.embed([[2]], None, compute)
        return metrics, cache, kept, len(compute.calls) == calls + 1

    metrics, cache, kept, recomputed = asyncio.run(scenario())
    assert kept and recomputed
    assert cache.bytes <= budget and len(cache) == 2
    assert metrics.registry.get_sample_value("embedrpc_cache_evictions_total") == 2


def test_a_vector_larger_than_the_budget_is_answered_not_kept():
    async def scenario():
        cache, compute = EmbeddingCache(10, SPACE), Counting()
        got = await cache.embed([[5]], None, compute)
        await cache.embed([[5]], None, compute)
        return cache, compute, got

    cache, compute, got = asyncio.run(scenario())
    assert len(compute.calls) == 2 and len(cache) == 0 and cache.bytes == 0
    assert got.shape == (1, DIM)


def test_requests_in_flight_together_share_one_computation():
    async def scenario():
        gate = asyncio.Event()
        cache, compute = EmbeddingCache(1 << 20, SPACE), Counting(gate)
        first = asyncio.ensure_future(cache.embed([[7], [8]], None, compute))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(cache.embed([[8], [9]], None, compute))
        await asyncio.sleep(0)
        gate.set()
        return compute, await first, await second

    compute, first, second = asyncio.run(scenario())
    assert compute.calls == [[[7], [8]], [[9]]]
    assert first[1].tobytes() == second[0].tobytes()


def test_a_failed_computation_is_not_shared_with_its_waiters():
    async def scenario():
        gate = asyncio.Event()
        failing = Counting(gate, fail=True)
        cache = EmbeddingCache(1 << 20, SPACE)
        first = asyncio.ensure_future(cache.embed([[7]], None, failing))
        await asyncio.sleep(0)
        healthy = Counting()
        second = asyncio.ensure_future(cache.embed([[7]], None, healthy))
        await asyncio.sleep(0)
        gate.set()
        with pytest.raises(RuntimeError, match="injected"):
            await first
        return healthy, await second, cache

    healthy, second, cache = asyncio.run(scenario())
    assert healthy.calls == [[[7]]] and second.shape == (1, DIM)
    assert len(cache) == 0  # the waiter's own row is answered, not kept as the cache's


def test_a_cancelled_request_does_not_cancel_its_waiters():
    async def scenario():
        gate = asyncio.Event()
        cache, compute = EmbeddingCache(1 << 20, SPACE), Counting(gate)
        first = asyncio.ensure_future(cache.embed([[7]], None, compute))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(cache.embed([[7]], None, Counting()))
        await asyncio.sleep(0)
        first.cancel()
        return await second

    assert asyncio.run(scenario()).shape == (1, DIM)


TEXTS = ["what is a vector database?", "Paris is the capital of France.", "深度学习与检索"]
RUNTIMES = [Choice("onnx-cpu", "onnx-fp32", "test"),
            Choice("openvino-cpu", "openvino-int8", "test"),
            Choice("llamacpp", "gguf-q8_0", "test")]


def answers(server) -> list[bytes]:
    """Full float vectors, a Matryoshka size and an int8 encoding of the same texts, as bytes."""
    stub = server.stub
    full = stub.Embed(pb.EmbedRequest(inputs=TEXTS, task=pb.TASK_QUERY), timeout=60)
    small = stub.Embed(pb.EmbedRequest(inputs=TEXTS, task=pb.TASK_QUERY, dimensions=32),
                       timeout=60)
    packed = stub.Embed(pb.EmbedRequest(inputs=TEXTS, task=pb.TASK_QUERY,
                                        encoding=pb.ENCODING_INT8), timeout=60)
    return [vectors_of(full).tobytes(), vectors_of(small).tobytes(),
            packed_of(packed, np.int8).tobytes()]


@pytest.mark.parametrize("choice", RUNTIMES, ids=[c.runtime for c in RUNTIMES])
def test_a_hit_is_bit_identical_on_every_runtime(eos_bundle, choice):
    cached = LoopbackServer(eos_bundle, choice=choice)
    plain = LoopbackServer(eos_bundle, choice=choice, cache_bytes=0)
    try:
        miss, hit = answers(cached), answers(cached)
        reference = [answers(plain), answers(plain)]
        assert cached.metric("embedrpc_cache_misses_total") == len(TEXTS)
        assert cached.metric("embedrpc_cache_hits_total") == 5 * len(TEXTS)
        assert plain.metric("embedrpc_cache_misses_total") == 0
    finally:
        cached.stop()
        plain.stop()
    assert hit == miss
    assert reference[0] == reference[1] == miss  # a server without the cache: the same bits
