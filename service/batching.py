"""Grouping token sequences into batches under a padded-token budget."""

from __future__ import annotations


def plan_batches(lengths: list[int], max_batch_tokens: int, *, padded: bool = True,
                 max_sequences: int | None = None) -> list[list[int]]:
    """Indices of `lengths` grouped so that each batch fits the token budget.

    Sequences are sorted by length so batch-mates have similar lengths (less padding).
    A padded batch costs `len(batch) * longest`, a packed one (`padded=False`) the sum of its
    lengths. A single sequence over the budget still gets a batch of its own (the caller
    decides whether such a sequence is allowed).
    """
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be positive")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    packed = 0
    for index in order:
        # Sorted ascending, so this sequence is the longest of the batch if it joins.
        cost = (len(current) + 1) * lengths[index] if padded else packed + lengths[index]
        full = max_sequences is not None and len(current) >= max_sequences
        if current and (cost > max_batch_tokens or full):
            batches.append(current)
            current, packed = [], 0
        current.append(index)
        packed += lengths[index]
    if current:
        batches.append(current)
    return batches
