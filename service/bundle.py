"""An exported bundle on disk: its manifest, its tokenizer, and runtimes over its artifacts."""

from __future__ import annotations

from pathlib import Path

from embedrpc.service import layout
from embedrpc.service.filehashes import UNCACHED, FileHashes
from embedrpc.service.manifest import Artifact, BundleError, Manifest, load_manifest, verify_bundle
from embedrpc.service.runtimes import DEFAULT_KIND, KINDS, Runtime, RuntimeOptions
from embedrpc.service.tokenization import BundleTokenizer


class Bundle:
    def __init__(self, root: Path, manifest: Manifest | None = None,
                 hashes: FileHashes = UNCACHED):
        """`hashes`: where checksums of unchanged files are remembered between starts."""
        self.root = Path(root)
        self.manifest = manifest or load_manifest(self.root)
        self.hashes = hashes

    def verify(self, artifacts: list[str] | None = None) -> None:
        verify_bundle(self.root, self.manifest, artifacts, self.hashes.sha256)

    def tokenizer(self, max_input_tokens: int | None = None) -> BundleTokenizer:
        path = self.root / layout.TOKENIZER
        try:
            return BundleTokenizer.from_file(path, max_input_tokens
                                             or self.manifest.max_input_tokens)
        except Exception as exc:  # the tokenizers library raises plain Exceptions
            raise BundleError(f"{path}: not a usable tokenizer: {exc}") from exc

    def runtime_options(self, **settings) -> RuntimeOptions:
        """Runtime options for this bundle: padding on the side its manifest names."""
        return RuntimeOptions(**{"padding_side": self.manifest.tokenizer.padding_side,
                                 **settings})

    def open_runtime(self, artifact_name: str, options: RuntimeOptions | None = None,
                     kind: str | None = None) -> Runtime:
        """A runtime of `kind` (default: the CPU one for the artifact's format) over it."""
        artifact = self.manifest.artifact(artifact_name)
        kind = kind or DEFAULT_KIND.get(artifact.format)
        if kind not in KINDS or artifact.name not in KINDS[kind].artifacts:
            raise BundleError(f"artifact {artifact.name!r} ({artifact.format}) cannot run on "
                              f"runtime {kind or 'any'}")
        return KINDS[kind].open(self, artifact, options or self.runtime_options())

    def path_of(self, artifact: Artifact) -> Path:
        """The verified file a runtime opens: never outside the bundle."""
        try:
            return layout.inside(self.root, artifact.path)
        except ValueError as exc:
            raise BundleError(f"artifact {artifact.name}: {exc}") from exc
