"""Parity at export: the sentence-transformers oracle's vectors for the probe set (and the
int8 calibration corpus), and each artifact measured against them in a child process."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from embedrpc.export.builders import record
from embedrpc.export.bundle_manifest import ST_FILES, TOKENIZER_FILES
from embedrpc.export.calibration import CORPUS_NAME, calibration_texts
from embedrpc.export.checkpoint import Checkpoint, ExportError
from embedrpc.export.formats import FORMATS
from embedrpc.export.oracle import (
    Probe,
    build_oracle,
    make_probes,
    oracle_embeddings,
    probes_to_json,
)
from embedrpc.export.staging import Staging
from embedrpc.service import layout
from embedrpc.service.bundle import Bundle
from embedrpc.service.encoding import compute_ranges
from embedrpc.service.manifest import Manifest
from embedrpc.service.tokenization import BundleTokenizer
from embedrpc.service.validate import (
    ParityResult,
    failure_line,
    format_report,
    measure,
    probe_token_ids,
)


def oracle_checkpoint(checkpoint: Checkpoint, task: str | None, torch_model,
                       staging: Staging) -> Path:
    """The directory sentence-transformers loads: the source as it is, or the loaded backbone
    saved as plain Qwen3 when an adapter was merged or the config names the repo's own code
    (which sentence-transformers could only load by running it)."""
    if task not in checkpoint.tasks_available and checkpoint.model_type == "qwen3":
        return checkpoint.path
    merged = staging.work_dir("merged")
    torch_model.save_pretrained(merged, safe_serialization=True)
    for name in (*TOKENIZER_FILES, *ST_FILES):
        if (checkpoint.path / name).is_file():
            shutil.copy2(checkpoint.path / name, merged / name)
    return merged


def write_oracle(root: Path, manifest: Manifest, tokenizer: BundleTokenizer,
                  oracle_dir: Path) -> None:
    limit = manifest.parity_probe["max_tokens"]
    probes = make_probes(manifest.prompts, limit, tokenizer.count_tokens)
    oracle = build_oracle(oracle_dir, max_seq_length=limit,
                          padding_side=manifest.tokenizer.padding_side)
    vectors = oracle_embeddings(oracle, probes, manifest.prompts)
    texts = calibration_texts()
    calibration = oracle_embeddings(oracle, [Probe(t, name) for name in sorted(manifest.prompts)
                                             for t in texts], manifest.prompts)
    manifest.calibration = {"corpus": CORPUS_NAME, "texts": len(texts),
                            "prompts": sorted(manifest.prompts),
                            "ranges": compute_ranges(calibration, manifest.matryoshka_dims)}
    (root / "parity").mkdir(exist_ok=True)
    (root / layout.PROBES).write_text(json.dumps(probes_to_json(probes), indent=1,
                                                 ensure_ascii=False) + "\n")
    np.save(root / layout.ORACLE, vectors)
    import sentence_transformers

    manifest.parity_probe.update(
        oracle=f"sentence-transformers {sentence_transformers.__version__}", probes=len(probes),
        files=[layout.PROBES, layout.ORACLE])


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
        result = progress.step(f"measuring parity of {name}", lambda spec=spec: measure(
            bundle, spec.name, spec.bar, sequences=probes))
        artifact.parity = result.parity
        results.append(result)
    report = format_report(results)
    (root / layout.REPORT).write_text(report + "\n")
    print(report, file=sys.stderr)
    raise_for_failures(bundle, results)
    return results


def raise_for_failures(bundle: Bundle, results: list[ParityResult]) -> None:
    """One line naming every artifact that crashed, failed or missed its bar."""
    problems = [failure_line(bundle, r, "measuring parity") for r in results if r.failure]
    below = [r.artifact for r in results if not r.failure and not r.passed]
    if below:
        problems.append(f"parity below bar for {', '.join(below)} (see the table above)")
    if problems:
        raise ExportError("; ".join(problems) + "; bundle not written")
