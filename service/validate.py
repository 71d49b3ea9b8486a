"""Parity of a bundle's artifacts against the oracle vectors stored in the bundle (torch-free).

`embedrpc export` stores the probe texts and the sentence-transformers oracle's vectors under
`parity/`; this module re-embeds the probes with the serving runtimes and compares, so a bundle
can be checked on the host that serves it (a GPU host included) without the export stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrpc.service.bundle import Bundle
from embedrpc.service.tokenization import Truncation

PROBES_FILE = "parity/probes.json"
ORACLE_FILE = "parity/oracle.npy"
PARITY_BATCH_TOKENS = 4096


@dataclass
class ParityResult:
    artifact: str
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    bar: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.bar


def compare(vectors: np.ndarray, oracle: np.ndarray) -> tuple[float, float, float]:
    """(min cosine, mean cosine, max abs diff) row by row."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = oracle / np.linalg.norm(oracle, axis=1, keepdims=True)
    cosines = np.sum(unit.astype(np.float64) * reference, axis=1)
    return float(cosines.min()), float(cosines.mean()), float(np.abs(vectors - oracle).max())


def probe_token_ids(bundle: Bundle) -> list[list[int]]:
    """The stored probes tokenised the way the server does (right truncation at the probe limit)."""
    manifest = bundle.manifest
    probes = json.loads((bundle.root / PROBES_FILE).read_text())
    tokenizer = bundle.tokenizer(manifest.parity_probe["max_tokens"])
    ids = []
    for probe in probes:
        prompt = manifest.prompts[probe["prompt_name"]]
        ids.extend(tokenizer.encode([probe["text"]], prompt, Truncation.RIGHT))
    return ids


def measure(bundle: Bundle, artifact_name: str, bar: float, *, padding_side: str = "right",
            providers: list[str] | None = None, sequences: list[list[int]] | None = None
            ) -> ParityResult:
    oracle = np.load(bundle.root / ORACLE_FILE)
    sequences = sequences or probe_token_ids(bundle)
    budget = max(PARITY_BATCH_TOKENS, max(len(s) for s in sequences))
    runtime = bundle.open_runtime(artifact_name, padding_side=padding_side, providers=providers,
                                  max_batch_tokens=budget)
    try:
        vectors = runtime.embed(sequences, budget)
    finally:
        runtime.close()
    return ParityResult(artifact_name, *compare(vectors, oracle), bar=bar)


def validate_bundle(root: Path, artifacts: list[str] | None = None, *,
                    padding_side: str = "right", providers: list[str] | None = None
                    ) -> list[ParityResult]:
    """Check checksums, then re-measure each artifact against the stored oracle vectors."""
    bundle = Bundle(root)
    names = artifacts or [a.name for a in bundle.manifest.artifacts]
    bundle.verify(names)
    sequences = probe_token_ids(bundle)
    return [measure(bundle, name, bundle.manifest.artifact(name).parity.bar,
                    padding_side=padding_side, providers=providers, sequences=sequences)
            for name in names]


def format_report(results: list[ParityResult]) -> str:
    lines = [f"{'artifact':<14} {'min cos':>10} {'mean cos':>10} {'max |diff|':>11} "
             f"{'bar':>8}  result"]
    for r in results:
        lines.append(f"{r.artifact:<14} {r.min_cosine:>10.6f} {r.mean_cosine:>10.6f} "
                     f"{r.max_abs_diff:>11.2e} {r.bar:>8}  {'ok' if r.passed else 'BELOW BAR'}")
    return "\n".join(lines)
