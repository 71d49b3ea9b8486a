"""Grouping token sequences into batches under a padded-token budget."""

from __future__ import annotations


def batch_fits(count: int, longest: int, tokens: int, *, max_batch_tokens: int, padded: bool,
               max_sequences: int | None = None, max_padding_ratio: float | None = None
               ) -> bool:
    """Whether a batch of `count` sequences (the longest `longest`, `tokens` in all) may run.

    A padded batch costs `count * longest`, a packed one `tokens`; a padded batch may also be
    held to `max_padding_ratio` padded tokens per real token.
    """
    cost = count * longest if padded else tokens
    if cost > max_batch_tokens or (max_sequences is not None and count > max_sequences):
        return False
    return not (padded and max_padding_ratio is not None
                and count * longest > max_padding_ratio * tokens)


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
        if current and not batch_fits(len(current) + 1, lengths[index], packed + lengths[index],
                                      max_batch_tokens=max_batch_tokens, padded=padded,
                                      max_sequences=max_sequences):
            batches.append(current)
            current, packed = [], 0
        current.append(index)
        packed += lengths[index]
    if current:
        batches.append(current)
    return batches
