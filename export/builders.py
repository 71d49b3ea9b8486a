"""Writing each artifact of a bundle, and its manifest entry."""

from __future__ import annotations

from pathlib import Path

from embedrpc.export import gguf_export, onnx_export, openvino_export
from embedrpc.export.staging import Staging
from embedrpc.service.bundle import formats, layout
from embedrpc.service.bundle.formats import ArtifactFormat
from embedrpc.service.bundle.manifest import Artifact, FileEntry, Manifest


class ArtifactBuilder:
    """Builds each artifact from the model or from intermediates made once on first need
    (the ONNX fp32 graph for fp16/int8 and the OpenVINO IR, the F16 GGUF for llama.cpp's
    quantiser). An intermediate is written where its artifact belongs when that artifact is
    requested, else to scratch space."""

    def __init__(self, torch_model, manifest: Manifest, root: Path, staging: Staging,
                 requested: list[str], progress, tokenizer):
        """`tokenizer`: the bundle's (BundleTokenizer), for calibration inputs."""
        self.model, self.manifest, self.root = torch_model, manifest, root
        self.tokenizer = tokenizer
        self.staging, self.requested, self.progress = staging, requested, progress
        self._onnx_fp32: list[Path] | None = None
        self._gguf_f16: Path | None = None
        self._by_family = {formats.ONNX.name: self.onnx, formats.GGUF.name: self.gguf,
                           formats.OPENVINO.name: self.openvino}

    def build(self, spec: ArtifactFormat) -> list[Path]:
        return self._by_family[spec.family.name](spec)

    def onnx(self, spec: ArtifactFormat) -> list[Path]:
        if spec.name == formats.ONNX_FP32.name:
            return self.onnx_fp32()
        convert = {formats.ONNX_FP16.name: onnx_export.convert_fp16,
                   formats.ONNX_INT8.name: onnx_export.quantize_int8}[spec.name]
        return convert(self._onnx_fp32_graph(), self.root / spec.directory)

    def gguf(self, spec: ArtifactFormat) -> list[Path]:
        if spec.name == formats.GGUF_F16.name:
            return [self.gguf_f16()]
        target = self.root / spec.path
        if spec.precision in gguf_export.WRITTEN_TYPES:
            return self._write_gguf(target, spec.precision)
        return gguf_export.quantize(self.gguf_f16(), target, spec.precision)

    def openvino(self, spec: ArtifactFormat) -> list[Path]:
        out_dir = self.root / spec.directory
        if spec.name == formats.OPENVINO_BF16.name:
            return openvino_export.write_bf16(self._onnx_fp32_graph(), out_dir)
        tokenizer = self.manifest.tokenizer
        calibration = openvino_export.calibration_inputs(
            self.tokenizer, self.manifest.prompts, tokenizer.pad_token_id,
            tokenizer.padding_side)
        return openvino_export.write_int8(self._onnx_fp32_graph(), out_dir, calibration)

    def _home(self, spec: ArtifactFormat) -> Path:
        return self.root / spec.directory if spec.name in self.requested \
            else self.staging.work_dir(spec.name)

    def onnx_fp32(self) -> list[Path]:
        if self._onnx_fp32 is None:
            self._onnx_fp32 = self.progress.step("exporting ONNX fp32", lambda: (
                onnx_export.export_fp32(self.model, self._home(formats.ONNX_FP32))))
        return self._onnx_fp32

    def _onnx_fp32_graph(self) -> Path:
        return next(p for p in self.onnx_fp32() if p.name == onnx_export.GRAPH_NAME)

    def gguf_f16(self) -> Path:
        if self._gguf_f16 is None:
            target = self._home(formats.GGUF_F16) / Path(formats.GGUF_F16.path).name
            self._gguf_f16 = self._write_gguf(target, formats.GGUF_F16.precision)[0]
        return self._gguf_f16

    def _write_gguf(self, target: Path, precision: str) -> list[Path]:
        manifest = self.manifest
        return gguf_export.write_gguf(
            self.model, self.root / layout.TOKENIZER, target, precision,
            name=Path(manifest.source.model).name, eos_token_id=manifest.tokenizer.eos_token_id,
            pad_token_id=manifest.tokenizer.pad_token_id, context_length=manifest.max_input_tokens)


def record(spec: ArtifactFormat, files: list[Path], root: Path) -> Artifact:
    relative = [p.relative_to(root).as_posix() for p in files]
    return Artifact(spec.name, spec.family.name, spec.precision, spec.path,
                    [FileEntry.of(root, r) for r in relative], lossy=spec.lossy)
