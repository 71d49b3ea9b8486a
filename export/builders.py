"""Writing each artifact of a bundle, and its manifest entry."""

from __future__ import annotations

from pathlib import Path

from embedrpc.export import gguf_export, onnx_export, openvino_export
from embedrpc.export.formats import FORMATS, FormatSpec
from embedrpc.export.staging import Staging
from embedrpc.service import layout
from embedrpc.service.manifest import Artifact, FileEntry, Manifest


class ArtifactBuilder:
    """Builds each artifact from the model or from intermediates made once on first need
    (the ONNX fp32 graph for fp16/int8, the F16 GGUF for llama.cpp's quantiser). An
    intermediate is written where its artifact belongs when that artifact is requested,
    else to scratch space."""

    def __init__(self, torch_model, manifest: Manifest, root: Path, staging: Staging,
                 requested: list[str], progress, tokenizer):
        """`tokenizer`: the bundle's (BundleTokenizer), for calibration inputs."""
        self.model, self.manifest, self.root = torch_model, manifest, root
        self.tokenizer = tokenizer
        self.staging, self.requested, self.progress = staging, requested, progress
        self._onnx_fp32: list[Path] | None = None
        self._gguf_f16: Path | None = None

    def build(self, spec: FormatSpec) -> list[Path]:
        if spec.format == "openvino":
            return self.openvino(spec)
        if spec.format == "onnx":
            if spec.precision == "fp32":
                return self.onnx_fp32()
            source = next(p for p in self.onnx_fp32() if p.name == "model.onnx")
            convert = onnx_export.convert_fp16 if spec.precision == "fp16" \
                else onnx_export.quantize_int8
            return convert(source, self.root / spec.directory)
        if spec.precision == "f16":
            return [self.gguf_f16()]
        target = self.root / layout.artifact_file(spec.format, spec.precision)
        if spec.precision in gguf_export.WRITTEN_TYPES:
            return self._write_gguf(target, spec.precision)
        return gguf_export.quantize(self.gguf_f16(), target, spec.precision)

    def openvino(self, spec: FormatSpec) -> list[Path]:
        source = next(p for p in self.onnx_fp32() if p.name == "model.onnx")
        out_dir = self.root / spec.directory
        if spec.precision == "bf16":
            return openvino_export.write_bf16(source, out_dir)
        tokenizer = self.manifest.tokenizer
        calibration = openvino_export.calibration_inputs(
            self.tokenizer, self.manifest.prompts, tokenizer.pad_token_id,
            tokenizer.padding_side)
        return openvino_export.write_int8(source, out_dir, calibration)

    def _home(self, name: str) -> Path:
        return self.root / FORMATS[name].directory if name in self.requested \
            else self.staging.work_dir(name)

    def onnx_fp32(self) -> list[Path]:
        if self._onnx_fp32 is None:
            self._onnx_fp32 = self.progress.step("exporting ONNX fp32", lambda: (
                onnx_export.export_fp32(self.model, self._home("onnx-fp32"))))
        return self._onnx_fp32

    def gguf_f16(self) -> Path:
        if self._gguf_f16 is None:
            target = self._home("gguf-f16") / Path(layout.artifact_file("gguf", "f16")).name
            self._gguf_f16 = self._write_gguf(target, "f16")[0]
        return self._gguf_f16

    def _write_gguf(self, target: Path, precision: str) -> list[Path]:
        manifest = self.manifest
        return gguf_export.write_gguf(
            self.model, self.root / layout.TOKENIZER, target, precision,
            name=Path(manifest.source.model).name, eos_token_id=manifest.tokenizer.eos_token_id,
            pad_token_id=manifest.tokenizer.pad_token_id, context_length=manifest.max_input_tokens)


def record(spec: FormatSpec, files: list[Path], root: Path) -> Artifact:
    relative = [p.relative_to(root).as_posix() for p in files]
    main = layout.artifact_file(spec.format, spec.precision)
    return Artifact(spec.name, spec.format, spec.precision, main,
                    [FileEntry.of(root, r) for r in relative], lossy=spec.lossy)
