"""`embedrpc export`: checkpoint -> bundle, step by step with progress on stderr.

resolve the checkpoint -> load it (adapter merged) -> stage a bundle directory -> manifest and
tokenizer (export/bundle_manifest.py) -> oracle vectors (export/parity.py) -> each artifact
(export/builders.py, formats in export/formats.py) measured against them -> publish.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from embedrpc.export import lora
from embedrpc.export.builders import ArtifactBuilder
from embedrpc.export.bundle_manifest import base_manifest
from embedrpc.export.checkpoint import choose_task, choose_tasks, load_model, resolve
from embedrpc.export.formats import parse_formats
from embedrpc.export.parity import (
    measure_all,
    merged_oracle_dir,
    oracle_checkpoint,
    write_oracle,
)
from embedrpc.export.staging import Staging, check_destination
from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.manifest import Manifest

DEFAULT_PROBE_MAX_TOKENS = 512


class Progress:
    """One line per step on stderr, with the time the step took."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.started = time.monotonic()

    def step(self, message: str, action: Callable):
        began = time.monotonic()
        print(f"[export] {message} ...", file=self.stream, flush=True)
        result = action()
        print(f"[export] {message}: done in {time.monotonic() - began:.1f}s", file=self.stream,
              flush=True)
        return result

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def export_bundle(model: str, out: Path, *, revision: str | None = None, task: str | None = None,
                  tasks: str | None = None, formats: str | None = None, force: bool = False,
                  probe_max_tokens: int = DEFAULT_PROBE_MAX_TOKENS,
                  progress: Progress | None = None) -> Manifest:
    """`task`: the one adapter to merge (a base repo) or the task a merged repo was made for;
    `tasks` (a base repo): the adapters to apply at run time instead, comma-separated or
    `all`: one bundle, one backbone, every task."""
    progress = progress or Progress()
    names = parse_formats(formats)
    check_destination(Path(out), force)  # fail before any download
    checkpoint = progress.step(f"resolving {model}", lambda: resolve(model, revision))
    run_tasks = choose_tasks(checkpoint, tasks, task)
    task = None if run_tasks else choose_task(checkpoint, task)
    torch_model = progress.step(f"loading {checkpoint.path}" + (f" + {task} adapter"
                                if task in checkpoint.tasks_available else ""),
                                lambda: load_model(checkpoint, task))
    adapters = [lora.read_adapter(checkpoint.path / "adapters" / name, name,
                                  torch_model.config.num_hidden_layers) for name in run_tasks]
    with Staging(Path(out), force) as staging:
        root = staging.path
        manifest = base_manifest(checkpoint, task, torch_model.config, root)
        manifest.tasks = list(run_tasks)
        bundle = Bundle(root, manifest)
        tokenizer = bundle.tokenizer()
        oracle_dirs = {name: (lambda name=name: merged_oracle_dir(checkpoint, name, torch_model,
                                                                  staging))
                       for name in run_tasks} or {
            None: lambda: oracle_checkpoint(checkpoint, task, torch_model, staging)}
        manifest.parity_probe, manifest.calibration = progress.step(
            "computing sentence-transformers oracle and calibration vectors"
            + (f" for tasks {', '.join(run_tasks)}" if run_tasks else ""),
            lambda: write_oracle(root, manifest, tokenizer, oracle_dirs,
                                 min(probe_max_tokens, manifest.max_input_tokens)))
        builder = ArtifactBuilder(torch_model, manifest, root, staging, names, progress,
                                  tokenizer, adapters)
        if adapters:
            manifest.adapters = progress.step("writing the task adapters",
                                              builder.write_adapters)
        measure_all(bundle, names, builder.build, progress)
        manifest.write(root)
        staging.publish()
    print(f"[export] bundle written to {out} in {progress.elapsed:.1f}s", file=sys.stderr)
    return manifest
