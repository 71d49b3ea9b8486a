"""Grouping token sequences into batches under a padded-token budget."""

from __future__ import annotations


def plan_batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices of `lengths` grouped so that each batch's padded size fits the budget.

    Sequences are sorted by length so batch-mates have similar lengths (less padding).
    A padded batch costs `len(batch) * longest`; a single sequence over the budget still
    gets a batch of its own (the caller decides whether such a sequence is allowed).
    """
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be positive")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted ascending, so this sequence is the longest of the batch if it joins.
        if current and (len(current) + 1) * lengths[index] > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
