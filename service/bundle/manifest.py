"""The bundle manifest: the one contract between `embedrpc export` and `embedrpc serve`.

A bundle is a directory holding `manifest.json`, the tokenizer files and the model artifacts.
Everything the server needs to know (dims, prompts, pooling, max length, checksums) is read
from here and nowhere else, and every field is checked when a bundle is opened: a manifest that
promises what this server cannot honour is refused in one line, never served as if it said
something else.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from embedrpc.service.bundle import formats, layout, schema
from embedrpc.service.bundle.layout import sha256_file
from embedrpc.service.errors import EmbedrpcError

# 2: `created_by` dropped (schema_version says what a reader needs); the calibration and
# parity-probe blocks typed; `lossy` and the parity bars checked against the formats; the EOS
# facts checked against the tokenizer's post-processor (service/bundle/bundle.py).
SCHEMA_VERSION = 2
MANIFEST_NAME = layout.MANIFEST
# What every runtime computes: the last token's hidden state of a Qwen3 backbone,
# L2-normalised. A manifest that asks for anything else is refused, never served as if it said
# this.
SERVED_ARCHITECTURE, SERVED_POOLING, SERVED_NORMALIZE = "qwen3", "last", True
PADDING_SIDES = ("left", "right")


class BundleError(EmbedrpcError):
    """The bundle is missing, malformed, or its files do not match the manifest."""


@dataclass
class FileEntry:
    path: str  # relative to the bundle root
    bytes: int
    sha256: str

    @classmethod
    def of(cls, root: Path, relative: str) -> "FileEntry":
        full = root / relative
        return cls(relative, full.stat().st_size, sha256_file(full))


@dataclass
class Parity:
    """Agreement of an artifact with the sentence-transformers oracle over the probe set."""

    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    bar: float
    passed: bool = False

    def __post_init__(self):
        self.passed = bool(self.min_cosine >= self.bar)  # NaN (nothing measured) never passes


@dataclass
class Artifact:
    name: str  # e.g. "onnx-int8", "gguf-q8_0"
    format: str  # "onnx" | "gguf" | "openvino"
    precision: str  # "fp32" | "fp16" | "int8" | "f16" | "bf16" | "q8_0" | "q4_k_m"
    path: str  # the file a runtime opens
    files: list[FileEntry]  # every file of the artifact (ONNX external data included)
    lossy: bool = False
    parity: Parity | None = None  # with run-time task adapters: the worst task's
    task_parity: dict[str, Parity] = field(default_factory=dict)  # per task, when there are

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)


@dataclass
class TaskAdapter:
    """One task's LoRA adapter, in each form the bundle's artifacts load (formats.py)."""

    task: str
    files: list[FileEntry]


@dataclass
class TokenizerInfo:
    files: list[FileEntry]
    appends_eos: bool  # read from the checkpoint's post-processor
    eos_token_id: int | None
    pad_token_id: int
    padding_side: str


@dataclass
class Source:
    model: str  # hub id, or the local path it was exported from
    revision: str | None  # hub commit, or None for a local directory
    content_sha256: str  # hash over the checkpoint's weight/config/tokenizer files
    task: str | None  # merged LoRA task (None when the checkpoint is already merged)

    @property
    def public_name(self) -> str:
        """What clients are told: a hub id as it is; a local export by its directory's name
        and content hash, never the exporter's path."""
        if not Path(self.model).is_absolute():
            return self.model
        return f"{Path(self.model).name} (local, sha256:{self.content_sha256[:12]})"


@dataclass
class ParityProbe:
    """How the stored parity probes (parity/probes.json) and the oracle's vectors for them
    (parity/oracle.npy) were made."""

    oracle: str  # e.g. "sentence-transformers 5.1.0"
    probes: int  # probe texts, and oracle rows
    max_tokens: int  # probes are cut (on the right, keeping EOS) at this many tokens
    files: list[str] = field(default_factory=lambda: [layout.PROBES, layout.ORACLE])


@dataclass
class ValueRange:
    min: list[float]
    max: list[float]


@dataclass
class OutputCalibration:
    """Per-dimension value ranges of a fixed corpus's embeddings, for the int8/uint8 output
    encodings (so a text's bytes never depend on its batch-mates)."""

    corpus: str  # the corpus's name and version (export/calibration.py)
    texts: int
    prompts: list[str]  # embedded under each of these prompts
    ranges: dict[str, ValueRange]  # by Matryoshka size, of vectors re-normalised at that size


@dataclass
class Manifest:
    source: Source
    architecture: str
    hidden_size: int
    matryoshka_dims: list[int]
    max_input_tokens: int
    prompts: dict[str, str]
    default_prompt_name: str
    tokenizer: TokenizerInfo
    artifacts: list[Artifact] = field(default_factory=list)
    pooling: str = "last"
    normalize: bool = True
    parity_probe: ParityProbe | None = None  # set once the oracle's vectors are stored
    calibration: OutputCalibration | None = None  # int8/uint8 output ranges (None: not offered)
    # Tasks served with run-time LoRA adapters, the default first (empty: the weights are one
    # task's, merged: source.task); each task's adapter files in `adapters`.
    tasks: list[str] = field(default_factory=list)
    adapters: list[TaskAdapter] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def artifact(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise BundleError(f"bundle has no artifact {name!r}; it has "
                          f"{', '.join(a.name for a in self.artifacts) or 'none'}")

    @property
    def default_task(self) -> str | None:
        """The task a request without one gets: the first run-time task, else the merged one."""
        return self.tasks[0] if self.tasks else self.source.task

    def adapter(self, task: str) -> TaskAdapter:
        for adapter in self.adapters:
            if adapter.task == task:
                return adapter
        raise BundleError(f"bundle has no adapter for task {task!r}; it has "
                          f"{', '.join(self.tasks) or 'none'}")

    def parity_files(self) -> list[str]:
        """The probes and one oracle per task (one oracle without run-time tasks)."""
        return [layout.PROBES, *(layout.oracle_file(t) for t in (self.tasks or [None]))]

    def check_servable(self) -> None:
        """Refuse, in one line, what the manifest promises but no runtime does."""
        if self.architecture != SERVED_ARCHITECTURE:
            raise BundleError(f"the manifest's architecture {self.architecture!r} is not "
                              f"{SERVED_ARCHITECTURE!r}; embedrpc serves Qwen3 last-token "
                              f"embedders only")
        if self.pooling != SERVED_POOLING or self.normalize is not SERVED_NORMALIZE:
            raise BundleError(f"the manifest asks for pooling {self.pooling!r} with normalize "
                              f"{self.normalize!r}; embedrpc serves last-token pooling, "
                              f"L2-normalised, only")
        if self.tokenizer.padding_side not in PADDING_SIDES:
            raise BundleError(f"the manifest's tokenizer.padding_side "
                              f"{self.tokenizer.padding_side!r} is not left or right")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    def write(self, bundle_dir: Path) -> Path:
        target = Path(bundle_dir) / MANIFEST_NAME
        target.write_text(self.to_json())
        return target

    @classmethod
    def from_dict(cls, data) -> "Manifest":
        if not isinstance(data, dict):
            raise BundleError(f"malformed manifest: the document must be an object, not "
                              f"{type(data).__name__}")
        version = data.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) \
                and 1 <= version < SCHEMA_VERSION:
            raise BundleError(f"manifest schema_version {version} was written by an older "
                              f"embedrpc export (this embedrpc reads {SCHEMA_VERSION}); export "
                              f"the bundle again with `embedrpc export`")
        if version != SCHEMA_VERSION:
            raise BundleError(f"manifest schema_version {version!r} is not supported "
                              f"(this embedrpc reads {SCHEMA_VERSION})")
        try:
            manifest = schema.build(cls, data)
        except schema.SchemaError as exc:
            raise BundleError(f"malformed manifest: {exc}") from exc
        manifest.check()
        return manifest

    def check(self) -> None:
        """Refuse, in one line, a manifest whose values no server could honour: sizes out of
        range, files outside the bundle, artifacts not where their name says."""
        problems = []
        if self.hidden_size < 1:
            problems.append(f"hidden_size {self.hidden_size} is not positive")
        if not self.matryoshka_dims or self.matryoshka_dims != sorted(set(self.matryoshka_dims)) \
                or self.matryoshka_dims[0] < 1 or self.matryoshka_dims[-1] != self.hidden_size:
            problems.append(f"matryoshka_dims {self.matryoshka_dims} must rise from 1 or more to "
                            f"hidden_size {self.hidden_size}")
        if self.max_input_tokens < 1:
            problems.append(f"max_input_tokens {self.max_input_tokens} is not positive")
        if self.default_prompt_name not in self.prompts:
            problems.append(f"default_prompt_name {self.default_prompt_name!r} is not among the "
                            f"prompts {sorted(self.prompts)}")
        if self.tokenizer.pad_token_id < 0:
            problems.append("tokenizer.pad_token_id is negative")
        if layout.TOKENIZER not in [f.path for f in self.tokenizer.files]:
            problems.append(f"tokenizer.files does not list {layout.TOKENIZER}")
        problems += self._artifact_problems() + self._parity_probe_problems() \
            + self._calibration_problems() + self._task_problems()
        for entry in [*self.tokenizer.files, *(f for a in self.artifacts for f in a.files),
                      *(f for a in self.adapters for f in a.files)]:
            if not layout.is_bundle_path(entry.path):
                problems.append(f"file {entry.path!r} is not a plain path inside the bundle")
            if entry.bytes < 0 or len(entry.sha256) != 64:
                problems.append(f"file {entry.path!r} has no valid size and sha256")
        if problems:
            raise BundleError(f"invalid manifest: {'; '.join(problems[:3])}"
                              f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}")
        self.check_servable()

    def _artifact_problems(self) -> list[str]:
        problems = []
        for artifact in self.artifacts:
            spec = formats.FORMATS.get(artifact.name)
            if spec is None or (artifact.format, artifact.precision) != (spec.family.name,
                                                                         spec.precision):
                problems.append(f"artifact {artifact.name!r} is not <format>-<precision> of a "
                                f"known format ({', '.join(formats.FORMATS)})")
            elif artifact.path != spec.path:
                problems.append(f"artifact {artifact.name} must be at {spec.path}, not "
                                f"{artifact.path!r}")
            elif artifact.path not in [f.path for f in artifact.files]:
                problems.append(f"artifact {artifact.name}'s file {artifact.path} is not among "
                                f"its checksummed files")
            elif artifact.lossy != spec.lossy:
                problems.append(f"artifact {artifact.name} says lossy {artifact.lossy}, but its "
                                f"format is {'' if spec.lossy else 'not '}lossy")
            elif artifact.parity is not None and artifact.parity.bar < spec.bar:
                problems.append(f"artifact {artifact.name} was held to a bar of "
                                f"{artifact.parity.bar}, under its format's {spec.bar}")
            elif artifact.parity is not None and not artifact.parity.passed:
                problems.append(f"artifact {artifact.name} missed its parity bar at export "
                                f"(min cosine {artifact.parity.min_cosine})")
            elif sorted(artifact.task_parity) != sorted(self.tasks if artifact.parity else []):
                problems.append(f"artifact {artifact.name} records parity for tasks "
                                f"{sorted(artifact.task_parity)}, not for {sorted(self.tasks)}")
            elif any(p.bar < spec.bar or not p.passed for p in artifact.task_parity.values()):
                problems.append(f"artifact {artifact.name}'s parity for a task is under its "
                                f"format's bar {spec.bar}")
        if len({a.name for a in self.artifacts}) != len(self.artifacts):
            problems.append("an artifact is listed twice")
        if self.artifacts and self.parity_probe is None:
            problems.append("artifacts are listed without the parity_probe they were measured on")
        return problems

    def _parity_probe_problems(self) -> list[str]:
        probe = self.parity_probe
        if probe is None:
            return []
        problems = []
        if probe.files != self.parity_files():
            problems.append(f"parity_probe.files {probe.files} must be {self.parity_files()}")
        if probe.probes < 1:
            problems.append(f"parity_probe.probes {probe.probes} is not positive")
        if not 1 <= probe.max_tokens <= self.max_input_tokens:
            problems.append(f"parity_probe.max_tokens {probe.max_tokens} is not within 1.."
                            f"{self.max_input_tokens}")
        return problems

    def _calibration_problems(self) -> list[str]:
        calibration = self.calibration
        if calibration is None:
            return []
        problems = []
        if calibration.texts < 1:
            problems.append(f"calibration.texts {calibration.texts} is not positive")
        if not calibration.prompts or not set(calibration.prompts) <= set(self.prompts):
            problems.append(f"calibration.prompts {calibration.prompts} are not among the "
                            f"prompts {sorted(self.prompts)}")
        for dims, bounds in calibration.ranges.items():
            size = int(dims) if dims.isdigit() else None
            if size not in self.matryoshka_dims or any(
                    len(values) != size or not all(math.isfinite(v) for v in values)
                    for values in (bounds.min, bounds.max)):
                problems.append(f"calibration.ranges[{dims!r}] is not min/max lists of "
                                f"{dims} finite numbers for a Matryoshka size")
        return problems


    def _task_problems(self) -> list[str]:
        if not self.tasks and not self.adapters:
            return []
        problems = []
        if len(set(self.tasks)) != len(self.tasks) or not all(
                re.fullmatch(r"[a-z][a-z0-9-]*", task) for task in self.tasks):
            problems.append(f"tasks {self.tasks} must be distinct lower-case names")
        if self.source.task is not None:
            problems.append("a bundle with run-time tasks names no merged source.task")
        if sorted(a.task for a in self.adapters) != sorted(self.tasks):
            problems.append(f"adapters are for tasks {sorted(a.task for a in self.adapters)}, "
                            f"not for the tasks {sorted(self.tasks)}")
        families = {formats.FORMATS[a.name].family for a in self.artifacts
                    if a.name in formats.FORMATS}
        for adapter in self.adapters:
            needed = {family.adapter_path(adapter.task) for family in families}
            missing = needed - {f.path for f in adapter.files}
            if missing:
                problems.append(f"the {adapter.task} adapter lacks {', '.join(sorted(missing))}")
        return problems


def load_manifest(bundle_dir: Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not an embedrpc bundle (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: invalid JSON: {exc}") from exc
    return Manifest.from_dict(data)


def verify_files(bundle_dir: Path, entries: list[FileEntry],
                 sha256: Callable[[Path], str] = sha256_file) -> list[str]:
    """Problems found when checking `entries` against the files on disk (empty when all match)."""
    problems = []
    for entry in entries:
        try:
            full = layout.inside(Path(bundle_dir), entry.path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if not full.is_file():
            problems.append(f"{entry.path}: missing")
        elif full.stat().st_size != entry.bytes:
            problems.append(f"{entry.path}: {full.stat().st_size} bytes, manifest says "
                            f"{entry.bytes}")
        elif sha256(full) != entry.sha256:
            problems.append(f"{entry.path}: sha256 does not match the manifest")
    return problems


def verify_bundle(bundle_dir: Path, manifest: Manifest, artifacts: list[str] | None = None,
                  sha256: Callable[[Path], str] = sha256_file) -> None:
    """Raise BundleError unless the tokenizer and the named (default: all) artifacts match."""
    entries = [*manifest.tokenizer.files, *(f for a in manifest.adapters for f in a.files)]
    for artifact in manifest.artifacts:
        if artifacts is None or artifact.name in artifacts:
            entries.extend(artifact.files)
    problems = verify_files(bundle_dir, entries, sha256)
    if problems:
        raise BundleError(f"bundle {bundle_dir} does not match its manifest: "
                          + "; ".join(problems))
