"""The bundle's parity material: the probes and the oracle's vectors for them (parity/), read
and checked against the manifest, and how a runtime's vectors are compared with them."""

from __future__ import annotations

import json

import numpy as np

from embedrpc.service.bundle import layout
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.manifest import BundleError, ParityProbe
from embedrpc.service.bundle.tokenizer import Truncation


def compare(vectors: np.ndarray, oracle: np.ndarray) -> tuple[float, float, float]:
    """(min cosine, mean cosine, max abs diff) row by row."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = oracle / np.linalg.norm(oracle, axis=1, keepdims=True)
    cosines = np.sum(unit.astype(np.float64) * reference, axis=1)
    return float(cosines.min()), float(cosines.mean()), float(np.abs(vectors - oracle).max())


def parity_probe(bundle: Bundle) -> ParityProbe:
    if bundle.manifest.parity_probe is None:
        raise BundleError("the manifest records no parity probe; export the bundle again")
    return bundle.manifest.parity_probe


def probe_token_ids(bundle: Bundle) -> list[list[int]]:
    """The stored probes tokenised the way the server does (right truncation at the probe
    limit), as many as the manifest says."""
    check(bundle)
    tokenizer = bundle.tokenizer(parity_probe(bundle).max_tokens)
    return [ids for text, prompt in _probe_entries(bundle)
            for ids in tokenizer.encode([text], prompt, Truncation.RIGHT)]


def _probe_entries(bundle: Bundle) -> list[tuple[str, str]]:
    """(text, prompt) of each stored probe."""
    prompts = bundle.manifest.prompts
    try:
        probes = json.loads((bundle.root / layout.PROBES).read_text())
        return [(entry["text"], prompts[entry["prompt_name"]]) for entry in probes]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{layout.PROBES}: not the probes the manifest describes: "
                          f"{type(exc).__name__} {exc}") from exc


def check(bundle: Bundle) -> None:
    """The probes and the oracle's vectors are as many as the manifest says (BundleError if
    not); cheap enough for every start (nothing is tokenised)."""
    count = len(_probe_entries(bundle))
    if count != parity_probe(bundle).probes:
        raise BundleError(f"{layout.PROBES} holds {count} probes, the manifest says "
                          f"{parity_probe(bundle).probes}")
    for task in bundle.manifest.tasks or [None]:
        oracle_vectors(bundle, task, mmap=True)


def oracle_vectors(bundle: Bundle, task: str | None = None, mmap: bool = False) -> np.ndarray:
    """The oracle's vectors for the probes under `task` (None: the bundle's one merged task):
    one row per probe, hidden_size columns (`mmap`: mapped, not read)."""
    probe, manifest = parity_probe(bundle), bundle.manifest
    name = layout.oracle_file(task)
    try:
        vectors = np.load(bundle.root / name, allow_pickle=False,
                          mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{name}: unreadable: {exc}") from exc
    if vectors.shape != (probe.probes, manifest.hidden_size):
        raise BundleError(f"{name} has shape {vectors.shape}, the manifest says "
                          f"({probe.probes}, {manifest.hidden_size})")
    return vectors
