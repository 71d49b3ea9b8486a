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

from embedrpc.export.errors import ExportError
from embedrpc.service.bundle.layout import feed

TASKS = ("retrieval", "text-matching", "clustering", "classification")
SUPPORTED_MODEL_TYPES = ("qwen3", "jina_embeddings_v5")
# The base repo's own configuration class subclasses Qwen3Config without changing it; these keys
# only point at its Python code, which the export never runs (no trust_remote_code).
REMOTE_CODE_KEYS = ("auto_map", "model_type", "architectures", "task_names")
QWEN3_REQUIRED_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers",
                       "num_attention_heads", "num_key_value_heads", "vocab_size",
                       "max_position_embeddings", "rms_norm_eps")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "adapters/*/*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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

    @property
    def declared_tasks(self) -> tuple[str, ...]:
        """The config's `task_names` (the base repo lists its four), empty when not declared."""
        return tuple(self.config.get("task_names") or ())

    def qwen3_config(self):
        """The backbone's Qwen3Config, built from the JSON as loaders that never import the
        repo's code do: everything but the keys naming that code."""
        from transformers import Qwen3Config

        return Qwen3Config(**{key: value for key, value in self.config.items()
                              if key not in REMOTE_CODE_KEYS})

    def content_sha256(self) -> str:
        """One hash over every config, tokenizer, weight and adapter file (name and bytes)."""
        digest = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            relative = file.relative_to(self.path).as_posix()
            if relative.startswith(".") or "/." in relative:
                continue
            digest.update(relative.encode() + b"\0")
            feed(digest, file)
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
    architectures = ", ".join(config.get("architectures") or []) or "unknown"
    if checkpoint.model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(f"{model}: model_type {checkpoint.model_type or 'missing'!r} "
                          f"({architectures}) is not supported; supported: "
                          f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    missing = [key for key in QWEN3_REQUIRED_KEYS if key not in config]
    if missing:
        raise ExportError(f"{model}: model_type {checkpoint.model_type!r} ({architectures}) is "
                          f"not a Qwen3 shape: config.json lacks {', '.join(missing)}")
    return checkpoint


def choose_task(checkpoint: Checkpoint, task: str | None) -> str | None:
    """The adapter to merge (or the task a merged checkpoint was made for), checked."""
    if task is not None and task not in TASKS:
        raise ExportError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    declared = checkpoint.declared_tasks
    if task is not None and declared and task not in declared:
        raise ExportError(f"{checkpoint.model} declares tasks {', '.join(declared)} "
                          f"(config.json task_names), not {task!r}")
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


ALL_TASKS = "all"


def choose_tasks(checkpoint: Checkpoint, tasks: str | None, task: str | None) -> list[str]:
    """The adapters a base repo's bundle applies at run time (`--tasks a,b` or `all`), the
    first the default; [] without --tasks."""
    if not tasks:
        return []
    if task is not None:
        raise ExportError("--task merges one adapter, --tasks applies several at run time: "
                          "choose one")
    if not checkpoint.tasks_available:
        raise ExportError(f"{checkpoint.model} has no adapters/: --tasks needs the base repo "
                          f"with its task adapters")
    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if names == [ALL_TASKS]:
        declared = checkpoint.declared_tasks or TASKS
        return [name for name in declared if name in checkpoint.tasks_available]
    unknown = [name for name in names if name not in checkpoint.tasks_available]
    if unknown or not names or len(set(names)) != len(names):
        raise ExportError(f"--tasks {tasks!r}: {checkpoint.model} has adapters for "
                          f"{', '.join(checkpoint.tasks_available)} (or say all)")
    return names


def _merged_task_from_name(model: str) -> str | None:
    name = Path(model.rstrip("/")).name
    return next((t for t in TASKS if name.endswith("-" + t)), None)


def load_model(checkpoint: Checkpoint, task: str | None):
    """The Qwen3 backbone in float32, eager attention, with the task's adapter merged.

    Built as a plain Qwen3Model from the config's JSON, whatever model_type it declares; a
    weight the backbone expects but the checkpoint lacks is an error, never a random init.
    """
    import torch
    from transformers import Qwen3Model

    model, loading = Qwen3Model.from_pretrained(
        checkpoint.path, config=checkpoint.qwen3_config(), dtype=torch.float32,
        attn_implementation="eager", output_loading_info=True)
    unexpected = [k for k in loading.get("unexpected_keys", []) if not k.startswith("lm_head.")]
    problems = [f"{label}: {', '.join(sorted(keys)[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", loading.get("missing_keys", [])),
                                    ("unexpected", unexpected),
                                    ("mismatched", [str(m[0]) if isinstance(m, tuple) else str(m)
                                                    for m in loading.get("mismatched_keys", [])]))
                if keys]
    if problems:
        raise ExportError(f"{checkpoint.model}: weights do not fit a Qwen3 backbone of its "
                          f"config ({'; '.join(problems)})")
    if task in checkpoint.tasks_available:
        from embedrpc.export.adapters import merge_lora

        model = merge_lora(model, checkpoint.path / "adapters" / task, task)
    model.config.use_cache = False
    return model.eval()
