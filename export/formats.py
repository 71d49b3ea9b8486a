"""The artifact formats `embedrpc export` writes, each with its parity bar: the one registry."""

from __future__ import annotations

from dataclasses import dataclass

from embedrpc.export.checkpoint import ExportError
from embedrpc.service import layout


@dataclass(frozen=True)
class FormatSpec:
    name: str
    format: str  # "onnx" | "gguf" | "openvino"
    precision: str
    bar: float  # minimum cosine vs the oracle over the probe set

    @property
    def lossy(self) -> bool:
        return self.bar < 0.999

    @property
    def directory(self) -> str:
        return layout.artifact_dir(self.format, self.precision)


FORMATS = {spec.name: spec for spec in [
    FormatSpec("onnx-fp32", "onnx", "fp32", 0.99999),
    FormatSpec("onnx-fp16", "onnx", "fp16", 0.9999),
    FormatSpec("onnx-int8", "onnx", "int8", 0.995),
    FormatSpec("gguf-f16", "gguf", "f16", 0.9999),
    FormatSpec("gguf-bf16", "gguf", "bf16", 0.9999),
    FormatSpec("gguf-q8_0", "gguf", "q8_0", 0.995),
    FormatSpec("gguf-q4_k_m", "gguf", "q4_k_m", 0.95),
    FormatSpec("openvino-int8", "openvino", "int8", 0.995),
    FormatSpec("openvino-bf16", "openvino", "bf16", 0.9999),
]}
BARS = {name: spec.bar for name, spec in FORMATS.items()}
FORMAT_GROUPS = {group: [n for n in FORMATS if n.startswith(group + "-")]
                 for group in ("onnx", "gguf", "openvino")}
DEFAULT_FORMATS = list(FORMATS)


def parse_formats(text: str | None) -> list[str]:
    """Comma-separated format names or groups, checked, in canonical order."""
    if not text:
        return list(DEFAULT_FORMATS)
    chosen: set[str] = set()
    for item in (part.strip().lower() for part in text.split(",")):
        if item in FORMATS:
            chosen.add(item)
        elif item in FORMAT_GROUPS or item == "all":
            chosen.update(FORMAT_GROUPS.get(item, FORMATS))
        else:
            raise ExportError(f"unknown format {item!r}; choose from "
                              f"{', '.join([*FORMATS, *FORMAT_GROUPS, 'all'])}")
    return [name for name in FORMATS if name in chosen]
