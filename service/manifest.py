"""The bundle manifest: the one contract between `embedrpc export` and `embedrpc serve`.

A bundle is a directory holding `manifest.json`, the tokenizer files and the model artifacts.
Everything the server needs to know (dims, prompts, pooling, max length, checksums) is read
from here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedrpc.service import layout
from embedrpc.service.errors import EmbedrpcError
from embedrpc.service.layout import sha256_file

SCHEMA_VERSION = 1
MANIFEST_NAME = layout.MANIFEST
# What every runtime computes: the last token's hidden state, L2-normalised. A manifest that
# asks for anything else is refused, never served as if it said this.
SERVED_POOLING, SERVED_NORMALIZE = "last", True
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
    format: str  # "onnx" | "gguf"
    precision: str  # "fp32" | "fp16" | "int8" | "f16" | "bf16" | "q8_0" | "q4_k_m"
    path: str  # the file a runtime opens
    files: list[FileEntry]  # every file of the artifact (ONNX external data included)
    lossy: bool = False
    parity: Parity | None = None

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)


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
    parity_probe: dict = field(default_factory=dict)  # how parity was measured
    # int8/uint8 output ranges: {"corpus", "texts", "ranges": {dims: {"min": [...], "max": [...]}}}
    calibration: dict = field(default_factory=dict)
    created_by: str = ""
    schema_version: int = SCHEMA_VERSION

    def artifact(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise BundleError(f"bundle has no artifact {name!r}; it has "
                          f"{', '.join(a.name for a in self.artifacts) or 'none'}")

    def check_servable(self) -> None:
        """Refuse, in one line, what the manifest promises but no runtime does."""
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
    def from_dict(cls, data: dict) -> "Manifest":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"manifest schema_version {version!r} is not supported "
                              f"(this embedrpc reads {SCHEMA_VERSION})")
        try:
            tokenizer = dict(data["tokenizer"])
            tokenizer["files"] = [FileEntry(**f) for f in tokenizer["files"]]
            artifacts = []
            for raw in data.get("artifacts", []):
                raw = dict(raw)
                raw["files"] = [FileEntry(**f) for f in raw["files"]]
                raw["parity"] = Parity(**raw["parity"]) if raw.get("parity") else None
                artifacts.append(Artifact(**raw))
            fields = {k: v for k, v in data.items()
                      if k not in ("tokenizer", "artifacts", "source")}
            manifest = cls(source=Source(**data["source"]),
                           tokenizer=TokenizerInfo(**tokenizer), artifacts=artifacts, **fields)
        except (KeyError, TypeError) as exc:
            raise BundleError(f"malformed manifest: {exc}") from exc
        manifest.check_servable()
        return manifest


def load_manifest(bundle_dir: Path) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not an embedrpc bundle (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: invalid JSON: {exc}") from exc
    return Manifest.from_dict(data)


def verify_files(bundle_dir: Path, entries: list[FileEntry]) -> list[str]:
    """Problems found when checking `entries` against the files on disk (empty when all match)."""
    problems = []
    for entry in entries:
        full = Path(bundle_dir) / entry.path
        if not full.is_file():
            problems.append(f"{entry.path}: missing")
        elif full.stat().st_size != entry.bytes:
            problems.append(f"{entry.path}: {full.stat().st_size} bytes, manifest says "
                            f"{entry.bytes}")
        elif sha256_file(full) != entry.sha256:
            problems.append(f"{entry.path}: sha256 does not match the manifest")
    return problems


def verify_bundle(bundle_dir: Path, manifest: Manifest, artifacts: list[str] | None = None) -> None:
    """Raise BundleError unless the tokenizer and the named (default: all) artifacts match."""
    entries = list(manifest.tokenizer.files)
    for artifact in manifest.artifacts:
        if artifacts is None or artifact.name in artifacts:
            entries.extend(artifact.files)
    problems = verify_files(bundle_dir, entries)
    if problems:
        raise BundleError(f"bundle {bundle_dir} does not match its manifest: "
                          + "; ".join(problems))
