"""An embedding cache in front of the scheduler: a text the runtime has embedded is not embedded
again while its vector is kept.

- Key: the served bundle and artifact (a namespace digest), the task adapter, and the exact token
  ids the runtime would see (prompt, truncation and EOS included), stored whole, never hashed
  alone: a hit is the vector those ids gave, not a lookalike's.
- Value: the runtime's full unit vector, as float32 bytes; Matryoshka sizes and encodings are
  derived from it per request, as for a miss. A hit returns those bytes: bit for bit the
  vector the miss returned.
- Budget: `max_bytes` of keys, values and a fixed per-entry overhead; least recently used first
  out. 0 turns the cache off.
- Duplicates are computed once: within one request, and across requests in flight together (a
  later request waits for the earlier one's batch). If that batch fails, the waiters compute
  their rows themselves, so one request's failure (its deadline, a full queue) is not another's.

It lives on the server's event loop (no locks: every call runs there).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import Awaitable, Callable, Sequence

import numpy as np

ENTRY_OVERHEAD_BYTES = 160  # the dict slot, the two bytes objects' headers, the LRU links
DEFAULT_MAX_BYTES = 128 * 2**20

Compute = Callable[[list[list[int]]], Awaitable[np.ndarray]]


def namespace(*parts: str) -> bytes:
    """A digest of what else decides a vector (the bundle's content, the served artifact)."""
    return hashlib.sha256("\0".join(parts).encode()).digest()


class EmbeddingCache:
    def __init__(self, max_bytes: int, space: bytes, metrics=None):
        if max_bytes < 0:
            raise ValueError(f"the cache budget must be >= 0 bytes, not {max_bytes}")
        self.max_bytes, self.space, self.metrics = max_bytes, space, metrics
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._in_flight: dict[bytes, asyncio.Future] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, task: str | None, ids: Sequence[int]) -> bytes:
        return b"".join((self.space, (task or "").encode(), b"\0",
                         np.asarray(ids, dtype=np.int32).tobytes()))

    async def embed(self, sequences: list[list[int]], task: str | None,
                    compute: Compute) -> np.ndarray:
        """The unit vectors of `sequences`, in order: kept ones from the cache, the rest from
        `compute` (each distinct one once), then kept."""
        keys = [self.key(task, ids) for ids in sequences]
        rows: list[np.ndarray | None] = [None] * len(keys)
        mine: dict[bytes, asyncio.Future] = {}  # keys this call computes
        first: dict[bytes, int] = {}  # where each of them first occurs
        waiting: list[tuple[int, asyncio.Future]] = []
        for index, key in enumerate(keys):
            stored = self._entries.get(key)
            if stored is not None:
                self._entries.move_to_end(key)
                rows[index] = np.frombuffer(stored, dtype=np.float32)
            elif key in self._in_flight:
                waiting.append((index, self._in_flight[key]))
            else:
                mine[key] = self._in_flight[key] = asyncio.get_running_loop().create_future()
                first[key] = index
        self._count(hits=len(keys) - len(mine), misses=len(mine))
        if mine:
            todo = list(mine)
            try:
                vectors = await compute([sequences[first[key]] for key in todo])
            except BaseException:
                self._settle(mine, None)
                raise
            computed = {key: self._keep(key, vectors[position])
                        for position, key in enumerate(todo)}
            self._settle(mine, computed)
            for key, index in first.items():
                rows[index] = computed[key]
        retry = []
        for index, future in waiting:
            try:
                rows[index] = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this request was cancelled, not the batch it waited for
                retry.append(index)
            except Exception:  # that request's failure; this one computes its own row
                retry.append(index)
        if retry:
            vectors = await compute([sequences[index] for index in retry])
            for position, index in enumerate(retry):
                rows[index] = vectors[position]
        return np.vstack(rows).astype(np.float32, copy=False)

    def _keep(self, key: bytes, vector: np.ndarray) -> np.ndarray:
        """Store `vector` (LRU, within budget); returns the row a hit will read, so the miss
        answers with exactly those bytes."""
        value = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        cost = len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        if cost <= self.max_bytes:
            self._entries[key] = value
            self.bytes += cost
            evicted = 0
            while self.bytes > self.max_bytes:
                old_key, old_value = self._entries.popitem(last=False)
                self.bytes -= len(old_key) + len(old_value) + ENTRY_OVERHEAD_BYTES
                evicted += 1
            self._count(evictions=evicted)
        return np.frombuffer(value, dtype=np.float32)

    def _settle(self, mine: dict[bytes, asyncio.Future],
                computed: dict[bytes, np.ndarray] | None) -> None:
        """Answer the waiters: the rows, or (None: the batch failed) a cancellation, on which
        each computes its own."""
        for key, future in mine.items():
            self._in_flight.pop(key, None)
            if future.done():
                continue
            if computed is None:
                future.cancel()
            else:
                future.set_result(computed[key])
        if self.metrics is not None:
            self.metrics.cache_bytes.set(self.bytes)
            self.metrics.cache_entries.set(len(self._entries))

    def _count(self, hits: int = 0, misses: int = 0, evictions: int = 0) -> None:
        if self.metrics is None:
            return
        for counter, value in ((self.metrics.cache_hits, hits),
                               (self.metrics.cache_misses, misses),
                               (self.metrics.cache_evictions, evictions)):
            if value:
                counter.inc(value)
