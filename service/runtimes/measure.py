"""Parity of a bundle's artifacts measured on this host with the serving runtimes, against the
oracle vectors stored in the bundle (torch-free): `embedrpc validate`, the self-check and
export's parity step all measure here.

Every measurement runs in a child process (service/runtimes/isolation.py): a runtime that
crashes on this host fails its artifact with the signal named, instead of killing the caller.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.manifest import Parity
from embedrpc.service.bundle.parity import compare, oracle_vectors, probe_token_ids
from embedrpc.service.runtimes import registry
from embedrpc.service.runtimes.interface import RuntimeOptions, options_for
from embedrpc.service.runtimes.isolation import ChildFailed, run_isolated

PARITY_BATCH_TOKENS = 4096


@dataclass
class ParityResult:
    """One artifact measured on this host: its parity, or why there is none."""

    artifact: str
    parity: Parity | None
    tokens_per_s: float = 0.0  # the probe set's embedding rate after one warm-up text
    failure: str | None = None  # "crashed (SIGSEGV)", "timed out ...", "failed (...)"
    task: str | None = None  # the run-time task adapter measured (None: a merged bundle)

    @property
    def passed(self) -> bool:
        return self.failure is None and self.parity.passed


def measure(bundle: Bundle, artifact_name: str, bar: float, *,
            sequences: list[list[int]] | None = None, options: RuntimeOptions | None = None,
            kind: str | None = None, timeout: float | None = None) -> list[ParityResult]:
    """Embed the probes with `artifact_name` in a child process and compare with the oracle:
    one result per run-time task (each against its own oracle), or one for a merged bundle.

    A crash, hang or load failure of the child is a failed result naming why, never an
    exception: the caller decides what a failed artifact means.
    """
    tasks = bundle.manifest.tasks or [None]
    payload = {"bundle": str(bundle.root), "artifact": artifact_name, "bar": bar, "kind": kind,
               "sequences": sequences, "tasks": tasks,
               "options": asdict(options or options_for(
                   bundle, max_batch_tokens=PARITY_BATCH_TOKENS))}
    try:
        answers = run_isolated(f"{__name__}:measure_here", payload,
                               **({"timeout": timeout} if timeout else {}))
    except ChildFailed as failure:
        return [ParityResult(artifact_name, None, failure=failure.reason, task=task)
                for task in tasks]
    return [ParityResult(artifact_name, Parity(**answer["parity"]), answer["tokens_per_s"],
                         task=task) for task, answer in zip(tasks, answers, strict=True)]


def measure_here(payload: dict) -> list[dict]:
    """The child's side of `measure`: open the runtime, then per task warm it up, embed,
    compare."""
    bundle = Bundle(Path(payload["bundle"]))
    sequences = payload["sequences"] or probe_token_ids(bundle)
    options = RuntimeOptions(**{**payload["options"], "max_input_tokens": max(
        payload["options"]["max_input_tokens"], max(map(len, sequences)))})
    runtime = registry.open_runtime(bundle, payload["artifact"], options, payload["kind"])
    answers = []
    try:
        for task in payload["tasks"]:
            runtime.embed([min(sequences, key=len)], task)  # first-call allocations, untimed
            started = time.perf_counter()
            vectors = runtime.embed(sequences, task)
            elapsed = time.perf_counter() - started
            parity = Parity(*compare(vectors, oracle_vectors(bundle, task)), bar=payload["bar"])
            answers.append({"parity": asdict(parity), "tokens_per_s": sum(map(len, sequences))
                            / elapsed if elapsed > 0 else 0.0})
    finally:
        runtime.close()
    return answers


def validate_bundle(root: Path, artifacts: list[str] | None = None, *,
                    padding_side: str | None = None, kind: str | None = None
                    ) -> list[ParityResult]:
    """Check checksums, then re-measure each artifact against the stored oracle vectors."""
    bundle = Bundle(root)
    names = artifacts or [a.name for a in bundle.manifest.artifacts]
    bundle.verify(names)
    sequences = probe_token_ids(bundle)
    options = options_for(bundle, max_batch_tokens=PARITY_BATCH_TOKENS,
                          **({"padding_side": padding_side} if padding_side else {}))
    return [result for name in names
            for result in measure(bundle, name, bundle.manifest.artifact(name).parity.bar,
                                  sequences=sequences, options=options, kind=kind)]


def failure_line(bundle: Bundle, result: ParityResult, doing: str, kind: str | None = None
                 ) -> str:
    """e.g. 'gguf-q8_0: llama.cpp crashed (SIGSEGV) on this host while measuring parity'."""
    engine = registry.runtime_for(bundle, result.artifact, kind).engine
    return f"{result.artifact}: {engine} {result.failure} on this host while {doing}"


def format_report(results: list[ParityResult]) -> str:
    width = max([14, *(len(f"{r.artifact} {r.task}") + 1 for r in results if r.task)])
    lines = [f"{'artifact':<{width}} {'min cos':>10} {'mean cos':>10} {'max |diff|':>11} "
             f"{'bar':>8}  result"]
    for r in results:
        name = f"{r.artifact} {r.task}" if r.task else r.artifact
        if r.failure:
            lines.append(f"{name:<{width}} {'—':>10} {'—':>10} {'—':>11} {'':>8}  "
                         f"FAILED: {r.failure}")
            continue
        p = r.parity
        lines.append(f"{name:<{width}} {p.min_cosine:>10.6f} {p.mean_cosine:>10.6f} "
                     f"{p.max_abs_diff:>11.2e} {p.bar:>8}  {'ok' if p.passed else 'BELOW BAR'}")
    return "\n".join(lines)
