"""An exported bundle on disk: its manifest, its tokenizer, and runtimes over its artifacts."""

from __future__ import annotations

from pathlib import Path

from embedrpc.service.manifest import Artifact, BundleError, Manifest, load_manifest, verify_bundle
from embedrpc.service.runtimes.base import Runtime
from embedrpc.service.tokenization import BundleTokenizer


class Bundle:
    def __init__(self, root: Path, manifest: Manifest | None = None):
        self.root = Path(root)
        self.manifest = manifest or load_manifest(self.root)

    def verify(self, artifacts: list[str] | None = None) -> None:
        verify_bundle(self.root, self.manifest, artifacts)

    def tokenizer(self, max_input_tokens: int | None = None) -> BundleTokenizer:
        return BundleTokenizer.from_file(self.root / "tokenizer.json",
                                         max_input_tokens or self.manifest.max_input_tokens)

    def open_runtime(self, artifact_name: str, *, threads: int = 0, padding_side: str = "right",
                     providers: list[str] | None = None, max_batch_tokens: int = 4096,
                     kv_type: str = "f32", batch_invariant: bool = False) -> Runtime:
        """A runtime over the artifact; `max_batch_tokens` sizes llama.cpp's context."""
        artifact = self.manifest.artifact(artifact_name)
        if artifact.format == "onnx":
            from embedrpc.service.runtimes.onnx_runtime import OnnxRuntime

            return OnnxRuntime(self.path_of(artifact), artifact=artifact.name,
                               precision=artifact.precision,
                               pad_token_id=self.manifest.tokenizer.pad_token_id,
                               providers=providers, threads=threads, padding_side=padding_side)
        if artifact.format == "gguf":
            from embedrpc.service.runtimes.llamacpp_runtime import LlamaCppRuntime

            return LlamaCppRuntime(self.path_of(artifact), artifact=artifact.name,
                                   precision=artifact.precision, threads=threads,
                                   max_batch_tokens=max_batch_tokens, kv_type=kv_type,
                                   batch_invariant=batch_invariant)
        raise BundleError(f"artifact {artifact.name!r} has format {artifact.format!r}, "
                          f"which this embedrpc cannot run")

    def path_of(self, artifact: Artifact) -> Path:
        return self.root / artifact.path
