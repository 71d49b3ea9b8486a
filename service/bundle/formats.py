"""The artifact formats a bundle can hold: the one place each is declared.

A family is a file format with its place in the bundle (ONNX, GGUF, OpenVINO IR); an artifact
format is one precision of a family with its parity bar (the least cosine to the oracle over
the probe set that export and the self-check accept). Runtimes name the formats they serve by
these objects (service/runtimes/), export writes them (export/builders.py), and the manifest
is checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass

LOSSY_BELOW = 0.999  # a bar under this marks an artifact as lossy (a user should know)


@dataclass(frozen=True)
class Family:
    name: str
    main_file: str  # the file a runtime opens, with {precision}: relative to the bundle
    adapter_file: str  # a task's run-time adapter in the form this family loads, with {task}

    def path(self, precision: str) -> str:
        return self.main_file.format(precision=precision)

    def adapter_path(self, task: str) -> str:
        return self.adapter_file.format(task=task)

    def directory(self, precision: str) -> str:
        return self.path(precision).rsplit("/", 1)[0]


@dataclass(frozen=True)
class ArtifactFormat:
    family: Family
    precision: str
    bar: float  # minimum cosine vs the oracle over the probe set

    @property
    def name(self) -> str:
        return f"{self.family.name}-{self.precision}"

    @property
    def lossy(self) -> bool:
        return self.bar < LOSSY_BELOW

    @property
    def path(self) -> str:
        return self.family.path(self.precision)

    @property
    def directory(self) -> str:
        return self.family.directory(self.precision)

    def __str__(self) -> str:
        return self.name


# The OpenVINO IR is converted from the ONNX graph: the same inputs take the same adapter file.
ONNX = Family("onnx", "onnx/{precision}/model.onnx", "adapters/{task}/lora.onnx_adapter")
GGUF = Family("gguf", "gguf/model-{precision}.gguf", "adapters/{task}/lora.gguf")
OPENVINO = Family("openvino", "openvino/{precision}/model.xml", ONNX.adapter_file)
FAMILIES = {family.name: family for family in (ONNX, GGUF, OPENVINO)}

ONNX_FP32 = ArtifactFormat(ONNX, "fp32", 0.99999)
ONNX_FP16 = ArtifactFormat(ONNX, "fp16", 0.9999)
ONNX_INT8 = ArtifactFormat(ONNX, "int8", 0.995)
GGUF_F16 = ArtifactFormat(GGUF, "f16", 0.9999)
GGUF_BF16 = ArtifactFormat(GGUF, "bf16", 0.9999)
GGUF_Q8_0 = ArtifactFormat(GGUF, "q8_0", 0.995)
GGUF_Q4_K_M = ArtifactFormat(GGUF, "q4_k_m", 0.95)
OPENVINO_INT8 = ArtifactFormat(OPENVINO, "int8", 0.995)
OPENVINO_BF16 = ArtifactFormat(OPENVINO, "bf16", 0.9999)

FORMATS = {spec.name: spec for spec in (ONNX_FP32, ONNX_FP16, ONNX_INT8, GGUF_F16, GGUF_BF16,
                                        GGUF_Q8_0, GGUF_Q4_K_M, OPENVINO_INT8, OPENVINO_BF16)}
BARS = {name: spec.bar for name, spec in FORMATS.items()}


def of_family(family: Family) -> list[ArtifactFormat]:
    return [spec for spec in FORMATS.values() if spec.family is family]
