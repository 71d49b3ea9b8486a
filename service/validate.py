"""Parity of a bundle's artifacts against the oracle vectors stored in the bundle (torch-free).

`embedrpc export` stores the probe texts and the sentence-transformers oracle's vectors under
`parity/`; this module re-embeds the probes with the serving runtimes and compares, so a bundle
can be checked on the host that serves it (a GPU host included) without the export stack.

Every measurement runs in a child process (service/isolation.py): a runtime that crashes on
this host fails its artifact with the signal named, instead of killing the caller.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedrpc.service import layout
from embedrpc.service.bundle import Bundle
from embedrpc.service.isolation import ChildFailed, run_isolated
from embedrpc.service.manifest import Parity
from embedrpc.service.runtimes import RuntimeOptions
from embedrpc.service.tokenization import Truncation

PARITY_BATCH_TOKENS = 4096
ENGINES = {"onnx": "onnxruntime", "gguf": "llama.cpp", "openvino": "OpenVINO"}  # by format


@dataclass
class ParityResult:
    """One artifact measured on this host: its parity, or why there is none."""

    artifact: str
    parity: Parity | None
    tokens_per_s: float = 0.0  # the probe set's embedding rate after one warm-up text
    failure: str | None = None  # "crashed (SIGSEGV)", "timed out ...", "failed (...)"

    @property
    def passed(self) -> bool:
        return self.failure is None and self.parity.passed


def compare(vectors: np.ndarray, oracle: np.ndarray) -> tuple[float, float, float]:
    """(min cosine, mean cosine, max abs diff) row by row."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = oracle / np.linalg.norm(oracle, axis=1, keepdims=True)
    cosines = np.sum(unit.astype(np.float64) * reference, axis=1)
    return float(cosines.min()), float(cosines.mean()), float(np.abs(vectors - oracle).max())


def probe_token_ids(bundle: Bundle) -> list[list[int]]:
    """The stored probes tokenised the way the server does (right truncation at the probe limit)."""
    manifest = bundle.manifest
    probes = json.loads((bundle.root / layout.PROBES).read_text())
    tokenizer = bundle.tokenizer(manifest.parity_probe["max_tokens"])
    ids = []
    for probe in probes:
        prompt = manifest.prompts[probe["prompt_name"]]
        ids.extend(tokenizer.encode([probe["text"]], prompt, Truncation.RIGHT))
    return ids


def measure(bundle: Bundle, artifact_name: str, bar: float, *,
            sequences: list[list[int]] | None = None, options: RuntimeOptions | None = None,
            kind: str | None = None, timeout: float | None = None) -> ParityResult:
    """Embed the probes with `artifact_name` in a child process and compare with the oracle.

    A crash, hang or load failure of the child is a failed result naming why, never an
    exception: the caller decides what a failed artifact means.
    """
    payload = {"bundle": str(bundle.root), "artifact": artifact_name, "bar": bar, "kind": kind,
               "sequences": sequences,
               "options": asdict(options or bundle.runtime_options(
                   max_batch_tokens=PARITY_BATCH_TOKENS))}
    try:
        answer = run_isolated("embedrpc.service.validate:measure_here", payload,
                              **({"timeout": timeout} if timeout else {}))
    except ChildFailed as failure:
        return ParityResult(artifact_name, None, failure=failure.reason)
    return ParityResult(artifact_name, Parity(**answer["parity"]), answer["tokens_per_s"])


def measure_here(payload: dict) -> dict:
    """The child's side of `measure`: open the runtime, warm it up, embed, compare."""
    bundle = Bundle(Path(payload["bundle"]))
    sequences = payload["sequences"] or probe_token_ids(bundle)
    options = RuntimeOptions(**{**payload["options"], "max_input_tokens": max(
        payload["options"]["max_input_tokens"], max(map(len, sequences)))})
    runtime = bundle.open_runtime(payload["artifact"], options, payload["kind"])
    try:
        runtime.embed([min(sequences, key=len)])  # first-call allocations, not timed
        started = time.perf_counter()
        vectors = runtime.embed(sequences)
        elapsed = time.perf_counter() - started
    finally:
        runtime.close()
    parity = Parity(*compare(vectors, np.load(bundle.root / layout.ORACLE)), bar=payload["bar"])
    return {"parity": asdict(parity),
            "tokens_per_s": sum(map(len, sequences)) / elapsed if elapsed > 0 else 0.0}


def validate_bundle(root: Path, artifacts: list[str] | None = None, *,
                    padding_side: str | None = None, kind: str | None = None
                    ) -> list[ParityResult]:
    """Check checksums, then re-measure each artifact against the stored oracle vectors."""
    bundle = Bundle(root)
    names = artifacts or [a.name for a in bundle.manifest.artifacts]
    bundle.verify(names)
    sequences = probe_token_ids(bundle)
    options = bundle.runtime_options(max_batch_tokens=PARITY_BATCH_TOKENS,
                                     **({"padding_side": padding_side} if padding_side else {}))
    return [measure(bundle, name, bundle.manifest.artifact(name).parity.bar,
                    sequences=sequences, options=options, kind=kind)
            for name in names]


def failure_line(bundle: Bundle, result: ParityResult, doing: str) -> str:
    """e.g. 'gguf-q8_0: llama.cpp crashed (SIGSEGV) on this host while measuring parity'."""
    engine = ENGINES.get(bundle.manifest.artifact(result.artifact).format, "the runtime")
    return f"{result.artifact}: {engine} {result.failure} on this host while {doing}"


def format_report(results: list[ParityResult]) -> str:
    lines = [f"{'artifact':<14} {'min cos':>10} {'mean cos':>10} {'max |diff|':>11} "
             f"{'bar':>8}  result"]
    for r in results:
        if r.failure:
            lines.append(f"{r.artifact:<14} {'—':>10} {'—':>10} {'—':>11} {'':>8}  "
                         f"FAILED: {r.failure}")
            continue
        p = r.parity
        lines.append(f"{r.artifact:<14} {p.min_cosine:>10.6f} {p.mean_cosine:>10.6f} "
                     f"{p.max_abs_diff:>11.2e} {p.bar:>8}  {'ok' if p.passed else 'BELOW BAR'}")
    return "\n".join(lines)
