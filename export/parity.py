"""Parity at export: the sentence-transformers oracle's vectors for the probe set (and the
int8 calibration corpus), and each artifact measured against them in a child process."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from embedrpc.export.builders import record
from embedrpc.export.bundle_manifest import ST_FILES, TOKENIZER_FILES
from embedrpc.export.calibration import CORPUS_NAME, calibration_texts
from embedrpc.export.checkpoint import Checkpoint
from embedrpc.export.errors import ExportError
from embedrpc.export.oracle import (
    Probe,
    build_oracle,
    make_probes,
    oracle_embeddings,
    probes_to_json,
)
from embedrpc.export.staging import Staging
from embedrpc.service.bundle import layout
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.formats import FORMATS
from embedrpc.service.bundle.manifest import Manifest, OutputCalibration, ParityProbe
from embedrpc.service.bundle.parity import probe_token_ids
from embedrpc.service.bundle.tokenizer import BundleTokenizer
from embedrpc.service.core.encoding import compute_ranges
from embedrpc.service.runtimes.measure import (
    ParityResult,
    failure_line,
    format_report,
    measure,
)


def oracle_checkpoint(checkpoint: Checkpoint, task: str | None, torch_model,
                       staging: Staging, name: str = "merged") -> Path:
    """The directory sentence-transformers loads: the source as it is, or the loaded backbone
    saved as plain Qwen3 when an adapter was merged or the config names the repo's own code
    (which sentence-transformers could only load by running it)."""
    if task not in checkpoint.tasks_available and checkpoint.model_type == "qwen3":
        return checkpoint.path
    merged = staging.work_dir(name)
    torch_model.save_pretrained(merged, safe_serialization=True)
    for name in (*TOKENIZER_FILES, *ST_FILES):
        if (checkpoint.path / name).is_file():
            shutil.copy2(checkpoint.path / name, merged / name)
    return merged


def merged_oracle_dir(checkpoint: Checkpoint, task: str, backbone, staging: Staging) -> Path:
    """The backbone with `task`'s adapter merged by peft (a copy: the backbone stays as it
    is), saved where sentence-transformers loads it: that task's oracle."""
    import copy

    from embedrpc.export.adapters import merge_lora

    merged = merge_lora(copy.deepcopy(backbone), checkpoint.path / "adapters" / task, task)
    path = oracle_checkpoint(checkpoint, task, merged, staging, name=f"merged-{task}")
    del merged
    return path


def write_oracle(root: Path, manifest: Manifest, tokenizer: BundleTokenizer,
                 oracle_dirs: dict[str | None, Callable[[], Path]],
                 max_tokens: int) -> tuple[ParityProbe, OutputCalibration]:
    """Store the probes and, per task, the oracle's vectors for them under parity/ (probes cut
    at `max_tokens`); `oracle_dirs` makes each task's checkpoint directory when called (None:
    the bundle's one merged task). Returns how they were made and the output calibration
    from the same oracles (ranges over every task's vectors)."""
    import sentence_transformers

    probes = make_probes(manifest.prompts, max_tokens, tokenizer.count_tokens)
    texts = calibration_texts()
    calibration = []
    (root / "parity").mkdir(exist_ok=True)
    for task, make_dir in oracle_dirs.items():
        oracle = build_oracle(make_dir(), max_seq_length=max_tokens,
                              padding_side=manifest.tokenizer.padding_side)
        np.save(root / layout.oracle_file(task),
                oracle_embeddings(oracle, probes, manifest.prompts))
        calibration.append(oracle_embeddings(
            oracle, [Probe(t, name) for name in sorted(manifest.prompts) for t in texts],
            manifest.prompts))
        del oracle
    (root / layout.PROBES).write_text(json.dumps(probes_to_json(probes), indent=1,
                                                 ensure_ascii=False) + "\n")
    return (ParityProbe(oracle=f"sentence-transformers {sentence_transformers.__version__}",
                        probes=len(probes), max_tokens=max_tokens,
                        files=manifest.parity_files()),
            OutputCalibration(corpus=CORPUS_NAME, texts=len(texts),
                              prompts=sorted(manifest.prompts),
                              ranges=compute_ranges(np.vstack(calibration),
                                                    manifest.matryoshka_dims)))


def measure_all(bundle: Bundle, names: list[str], build, progress) -> list[ParityResult]:
    """Build each artifact (`build(spec)` -> its files), record it, and measure its parity in
    a child process; the manifest on disk always lists what the child must open."""
    manifest, root = bundle.manifest, bundle.root
    probes = probe_token_ids(bundle)  # once, for every artifact
    results = []
    for name in names:
        spec = FORMATS[name]
        files = progress.step(f"writing {name}", lambda spec=spec: build(spec))
        artifact = record(spec, files, root)
        manifest.artifacts.append(artifact)
        manifest.write(root)  # what the measuring child reads; rewritten complete at the end
        measured = progress.step(f"measuring parity of {name}", lambda spec=spec: measure(
            bundle, spec.name, spec.bar, sequences=probes))  # one per task
        if all(r.passed for r in measured):  # a failure stops the export, reported below
            artifact.parity = min((r.parity for r in measured), key=lambda p: p.min_cosine)
            artifact.task_parity = {r.task: r.parity for r in measured if r.task}
        results += measured
    report = format_report(results)
    (root / layout.REPORT).write_text(report + "\n")
    print(report, file=sys.stderr)
    raise_for_failures(bundle, results)
    return results


def raise_for_failures(bundle: Bundle, results: list[ParityResult]) -> None:
    """One line naming every artifact that crashed, failed or missed its bar."""
    problems = list(dict.fromkeys(failure_line(bundle, r, "measuring parity")
                                  for r in results if r.failure))  # a crash fails every task
    below = list(dict.fromkeys(f"{r.artifact}{' (' + r.task + ')' if r.task else ''}"
                               for r in results if not r.failure and not r.passed))
    if below:
        problems.append(f"parity below bar for {', '.join(below)} (see the table above)")
    if problems:
        raise ExportError("; ".join(problems) + "; bundle not written")
