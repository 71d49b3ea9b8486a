"""Finding, checking and loading a Hugging Face checkpoint (hub id or local directory).

A checkpoint is either already merged (e.g. `jinaai/jina-embeddings-v5-text-small-retrieval`,
plain Qwen3 weights) or a base model with LoRA adapters under `adapters/<task>/` (the layout of
`jinaai/jina-embeddings-v5-text-small`), in which case exporting means merging one adapter.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

TASKS = ("retrieval", "text-matching", "clustering", "classification")
SUPPORTED_MODEL_TYPES = ("qwen3",)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "adapters/*/*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ExportError(Exception):
    """A user-facing export failure; the message is one line saying what to do."""


@dataclass
class Checkpoint:
    path: Path  # local directory holding the files
    model: str  # what the user asked for: hub id or local path
    revision: str | None  # resolved hub commit; None for a local directory
    config: dict
    tasks_available: tuple[str, ...]  # adapters present under adapters/

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    def content_sha256(self) -> str:
        """One hash over every config, tokenizer, weight and adapter file (name and bytes)."""
        digest = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            relative = file.relative_to(self.path).as_posix()
            if relative.startswith(".") or "/." in relative:
                continue
            digest.update(relative.encode() + b"\0")
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


def resolve(model: str, revision: str | None = None) -> Checkpoint:
    """Local directory as is, or a hub snapshot (download with progress)."""
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir() or not (local / "config.json").is_file():
            raise ExportError(f"{model}: not a checkpoint directory (no config.json)")
        if revision:
            raise ExportError("--revision applies to hub ids, not to a local directory")
        return _checkpoint(local.resolve(), str(local.resolve()), None)
    if not _HUB_ID.match(model):
        raise ExportError(f"{model}: no such directory, and not a hub id like 'org/name'")
    return _download(model, revision)


def _download(model_id: str, revision: str | None) -> Checkpoint:
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as exc:  # pragma: no cover - part of the export extra
        raise ExportError("huggingface_hub is missing: pip install 'embedrpc[export]'") from exc
    try:
        commit = HfApi().model_info(model_id, revision=revision).sha
        path = snapshot_download(model_id, revision=commit or revision,
                                 allow_patterns=HUB_PATTERNS)
    except Exception as exc:  # hub errors have many types: not found, gated, offline
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot download {model_id}"
                          f"{'@' + revision if revision else ''}: {reason}") from exc
    return _checkpoint(Path(path), model_id, commit or revision)


def _checkpoint(path: Path, model: str, revision: str | None) -> Checkpoint:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{model}: unreadable config.json: {exc}") from exc
    adapters = path / "adapters"
    tasks = tuple(sorted(d.name for d in adapters.iterdir()
                         if (d / "adapter_config.json").is_file())) if adapters.is_dir() else ()
    checkpoint = Checkpoint(path, model, revision, config, tasks)
    if checkpoint.model_type not in SUPPORTED_MODEL_TYPES:
        architectures = ", ".join(config.get("architectures") or []) or "unknown"
        raise ExportError(f"{model}: model_type {checkpoint.model_type or 'missing'!r} "
                          f"({architectures}) is not supported; supported: "
                          f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    return checkpoint


def choose_task(checkpoint: Checkpoint, task: str | None) -> str | None:
    """The adapter to merge (or the task a merged checkpoint was made for), checked."""
    if task is not None and task not in TASKS:
        raise ExportError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if checkpoint.tasks_available:
        if task is None:
            raise ExportError(f"{checkpoint.model} is a base model with task adapters "
                              f"({', '.join(checkpoint.tasks_available)}); choose one with --task")
        if task not in checkpoint.tasks_available:
            raise ExportError(f"{checkpoint.model} has no adapter for task {task!r}; it has "
                              f"{', '.join(checkpoint.tasks_available)}")
        return task
    merged_for = _merged_task_from_name(checkpoint.model)
    if task is not None and task != merged_for:
        made_for = f"made for {merged_for!r}" if merged_for else "already merged"
        raise ExportError(f"{checkpoint.model} has no adapters/ ({made_for}); "
                          f"it cannot serve task {task!r}: omit --task")
    return merged_for


def _merged_task_from_name(model: str) -> str | None:
    name = Path(model.rstrip("/")).name
    return next((t for t in TASKS if name.endswith("-" + t)), None)


def load_model(checkpoint: Checkpoint, task: str | None):
    """The Qwen3 backbone in float32, eager attention, with the task's adapter merged."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint.path, dtype=torch.float32,
                                      attn_implementation="eager")
    if task in checkpoint.tasks_available:
        from peft import PeftModel

        adapter = checkpoint.path / "adapters" / task
        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except Exception as exc:
            raise ExportError(f"cannot merge adapter {adapter}: {exc}") from exc
    model.config.use_cache = False
    return model.eval()
