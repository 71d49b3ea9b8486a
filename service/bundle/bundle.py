"""An exported bundle on disk: its manifest, its files (checked against the manifest's sums)
and its tokenizer (checked against the manifest's tokenizer facts)."""

from __future__ import annotations

from pathlib import Path

from embedrpc.service.bundle import layout
from embedrpc.service.bundle.checksums import UNCACHED, FileHashes
from embedrpc.service.bundle.manifest import (
    Artifact,
    BundleError,
    Manifest,
    load_manifest,
    verify_bundle,
)
from embedrpc.service.bundle.tokenizer import BundleTokenizer


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
        """The bundle's tokenizer, refused unless it does what the manifest says it does."""
        path = self.root / layout.TOKENIZER
        try:
            tokenizer = BundleTokenizer.from_file(path, max_input_tokens
                                                  or self.manifest.max_input_tokens)
        except Exception as exc:  # the tokenizers library raises plain Exceptions
            raise BundleError(f"{path}: not a usable tokenizer: {exc}") from exc
        self._check_eos(tokenizer)
        return tokenizer

    def _check_eos(self, tokenizer: BundleTokenizer) -> None:
        """The manifest's EOS facts agree with the tokenizer's post-processor."""
        facts = self.manifest.tokenizer
        if facts.appends_eos != tokenizer.appends_eos:
            raise BundleError(f"the manifest's tokenizer.appends_eos is {facts.appends_eos}, but "
                              f"the tokenizer's post-processor "
                              f"{'appends' if tokenizer.appends_eos else 'does not append'} one")
        if facts.appends_eos and facts.eos_token_id != tokenizer.special.suffix[-1]:
            raise BundleError(f"the manifest's tokenizer.eos_token_id {facts.eos_token_id} is "
                              f"not the id {tokenizer.special.suffix[-1]} the post-processor "
                              f"appends")
        if facts.eos_token_id is not None and tokenizer.token_of(facts.eos_token_id) is None:
            raise BundleError(f"the manifest's tokenizer.eos_token_id {facts.eos_token_id} is "
                              f"not in the tokenizer's vocabulary")

    def path_of(self, artifact: Artifact) -> Path:
        """The verified file a runtime opens: never outside the bundle."""
        try:
            return layout.inside(self.root, artifact.path)
        except ValueError as exc:
            raise BundleError(f"artifact {artifact.name}: {exc}") from exc
