"""Which inputs may share a batch: the one place this rule lives.

A runtime states its `BatchPolicy`; `take_batch` forms one batch from inputs waiting in queue
order (the scheduler calls it for every batch it runs), and `plan_batches` splits a whole list
the same way (`Runtime.embed`, validation and the benchmark's raw mode), so what is measured
offline is what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class BatchPolicy:
    """How a runtime's forward pass is charged and bounded.

    A padded batch costs `count * longest` tokens, a packed one (`packed=True`) the sum of its
    lengths; the cost is held to `max_tokens`, the count to `max_sequences`, and a padded batch
    to `max_padding_ratio` padded tokens per real token (a CPU computes every padded token).
    """

    max_tokens: int
    packed: bool = False
    max_sequences: int | None = None
    max_padding_ratio: float | None = None

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError("a batch policy needs a positive token budget")

    def fits(self, count: int, longest: int, tokens: int) -> bool:
        """Whether `count` sequences, the longest `longest`, `tokens` in all, may run at once."""
        cost = tokens if self.packed else count * longest
        if cost > self.max_tokens or (self.max_sequences is not None
                                      and count > self.max_sequences):
            return False
        return self.packed or self.max_padding_ratio is None \
            or count * longest <= self.max_padding_ratio * tokens


def take_batch(lengths: Sequence[int], policy: BatchPolicy) -> list[int]:
    """Indices (ascending) of the next batch among inputs of `lengths`, oldest first.

    The oldest input always goes (alone if it is over the budget: whether such an input is
    allowed is the caller's rule); then the inputs closest to it in length, oldest first among
    equals, while the batch still fits the policy.
    """
    anchor = lengths[0]
    order = sorted(range(len(lengths)), key=lambda i: (abs(lengths[i] - anchor), i))
    chosen: list[int] = []
    longest = total = 0
    for index in order:
        length = lengths[index]
        if chosen and not policy.fits(len(chosen) + 1, max(longest, length), total + length):
            continue
        chosen.append(index)
        longest, total = max(longest, length), total + length
    return sorted(chosen)


def plan_batches(lengths: Sequence[int], policy: BatchPolicy) -> list[list[int]]:
    """Every index of `lengths` in batches, formed as the scheduler would from this queue."""
    remaining = list(range(len(lengths)))
    batches = []
    while remaining:
        picked = take_batch([lengths[i] for i in remaining], policy)
        batches.append([remaining[i] for i in picked])
        taken = set(picked)
        remaining = [index for i, index in enumerate(remaining) if i not in taken]
    return batches
