"""Writing each artifact of a bundle, and its manifest entry."""

from __future__ import annotations

from pathlib import Path

from embedrpc.export import gguf_export, lora, onnx_export, openvino_export
from embedrpc.export.staging import Staging
from embedrpc.service.bundle import formats, layout
from embedrpc.service.bundle.formats import ArtifactFormat
from embedrpc.service.bundle.manifest import Artifact, FileEntry, Manifest
from embedrpc.service.bundle.manifest import TaskAdapter as TaskAdapterFiles


class ArtifactBuilder:
    """Builds each artifact from the model or from intermediates made once on first need
    (the ONNX fp32 graph for fp16/int8 and the OpenVINO IR, the F16 GGUF for llama.cpp's
    quantiser). An intermediate is written where its artifact belongs when that artifact is
    requested, else to scratch space."""

    def __init__(self, torch_model, manifest: Manifest, root: Path, staging: Staging,
                 requested: list[str], progress, tokenizer,
                 adapters: list[lora.TaskAdapter] | None = None):
        """`tokenizer`: the bundle's (BundleTokenizer), for calibration inputs; `adapters`:
        task adapters applied at run time (the graphs then take them as inputs)."""
        self.model, self.manifest, self.root = torch_model, manifest, root
        self.tokenizer, self.adapters = tokenizer, adapters or []
        self.staging, self.requested, self.progress = staging, requested, progress
        self._onnx_fp32: list[Path] | None = None
        self._lora_nodes: list[str] = []  # the float LoRA branch's MatMuls in the ONNX graph
        self._gguf_f16: Path | None = None
        self._by_family = {formats.ONNX.name: self.onnx, formats.GGUF.name: self.gguf,
                           formats.OPENVINO.name: self.openvino}

    def build(self, spec: ArtifactFormat) -> list[Path]:
        return self._by_family[spec.family.name](spec)

    def onnx(self, spec: ArtifactFormat) -> list[Path]:
        if spec.name == formats.ONNX_FP32.name:
            return self.onnx_fp32()
        if spec.name == formats.ONNX_FP16.name:
            return onnx_export.convert_fp16(self._onnx_fp32_graph(), self.root / spec.directory)
        return onnx_export.quantize_int8(self._onnx_fp32_graph(), self.root / spec.directory,
                                         keep_float=self._lora_nodes)

    def gguf(self, spec: ArtifactFormat) -> list[Path]:
        if spec.name == formats.GGUF_F16.name:
            return [self.gguf_f16()]
        target = self.root / spec.path
        if spec.precision in gguf_export.WRITTEN_TYPES:
            return self._write_gguf(target, spec.precision)
        return gguf_export.quantize(self.gguf_f16(), target, spec.precision)

    def openvino(self, spec: ArtifactFormat) -> list[Path]:
        out_dir = self.root / spec.directory
        source = self._openvino_source()
        if spec.name == formats.OPENVINO_BF16.name:
            return openvino_export.write_bf16(source, out_dir)
        tokenizer = self.manifest.tokenizer
        calibration = openvino_export.calibration_inputs(
            self.tokenizer, self.manifest.prompts, tokenizer.pad_token_id,
            tokenizer.padding_side, [lora.onnx_parameters(a) for a in self.adapters])
        return openvino_export.write_int8(source, out_dir, calibration,
                                          keep_float=self._lora_nodes)

    def _openvino_source(self) -> Path:
        """The ONNX graph OpenVINO converts: the fp32 one, with the LoRA inputs required (its
        ONNX reader cannot take their rank-0 defaults)."""
        graph = self._onnx_fp32_graph()
        if not self.adapters:
            return graph
        target = self.staging.work_dir("openvino-source") / onnx_export.GRAPH_NAME
        if not target.is_file():
            onnx_export.rewrite(graph, target, lora.strip_defaults)
        return target

    def write_adapters(self) -> list[TaskAdapterFiles]:
        """Each task's adapter in the forms the requested families load."""
        families = {formats.FORMATS[name].family for name in self.requested}
        entries = []
        for adapter in self.adapters:
            paths = []
            if families & {formats.ONNX, formats.OPENVINO}:
                paths.append(lora.write_onnx_adapter(
                    adapter, self.root / formats.ONNX.adapter_path(adapter.task)))
            if formats.GGUF in families:
                paths.append(lora.write_gguf_adapter(
                    adapter, self.root / formats.GGUF.adapter_path(adapter.task),
                    self.model.config.model_type))
            entries.append(TaskAdapterFiles(adapter.task, [
                FileEntry.of(self.root, p.relative_to(self.root).as_posix()) for p in paths]))
        return entries

    def _home(self, spec: ArtifactFormat) -> Path:
        return self.root / spec.directory if spec.name in self.requested \
            else self.staging.work_dir(spec.name)

    def onnx_fp32(self) -> list[Path]:
        if self._onnx_fp32 is None:
            self._onnx_fp32 = self.progress.step("exporting ONNX fp32", lambda: (
                onnx_export.export_fp32(self.model, self._home(formats.ONNX_FP32))))
            if self.adapters:  # branches that take each task's adapter at run time
                graph = self._onnx_fp32_graph()
                self._onnx_fp32 = onnx_export.rewrite(graph, graph, self._add_branches)
        return self._onnx_fp32

    def _add_branches(self, model) -> None:
        self._lora_nodes = lora.add_branches(model)

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
