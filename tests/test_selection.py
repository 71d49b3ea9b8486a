"""The runtime auto-selection rule (service/selection.py), host by host."""

from __future__ import annotations

import pytest

from embedrpc.service.manifest import Artifact, Manifest, Source, TokenizerInfo
from embedrpc.service.selection import Host, SelectionError, select

ALL = ["onnx-fp32", "onnx-fp16", "onnx-int8", "gguf-f16", "gguf-bf16", "gguf-q8_0",
       "gguf-q4_k_m"]
GPU = Host(True, "a CUDA device is visible", True)
CPU_WITH_LLAMA = Host(False, "no NVIDIA device is visible", True)
CPU_ONLY = Host(False, "no NVIDIA device is visible", False)
VNNI_WITH_LLAMA = Host(False, "no NVIDIA device is visible", True, int8_vnni=True)


def manifest(*names: str) -> Manifest:
    return Manifest(Source("m", None, "0" * 64, None), "qwen3", 64, [32, 64], 128,
                    {"query": "Query: ", "document": "Document: "}, "document",
                    TokenizerInfo([], True, 1, 1, "right"),
                    [Artifact(n, n.split("-")[0], n.split("-", 1)[1], "x", []) for n in names])


@pytest.mark.parametrize("host,names,runtime,artifact", [
    (GPU, ALL, "onnx-cuda", "onnx-fp16"),
    (GPU, ["onnx-fp32", "gguf-q8_0"], "onnx-cuda", "onnx-fp32"),
    (GPU, ["gguf-f16"], "llamacpp", "gguf-f16"),
    (CPU_WITH_LLAMA, ALL, "llamacpp", "gguf-q8_0"),
    (CPU_WITH_LLAMA, ["gguf-q4_k_m", "gguf-bf16", "onnx-int8"], "llamacpp", "gguf-bf16"),
    (CPU_WITH_LLAMA, ["onnx-fp32", "onnx-int8"], "onnx-cpu", "onnx-int8"),
    (CPU_ONLY, ALL, "onnx-cpu", "onnx-int8"),
    (CPU_ONLY, ["onnx-fp16", "onnx-fp32"], "onnx-cpu", "onnx-fp32"),
    (VNNI_WITH_LLAMA, ALL, "onnx-cpu", "onnx-int8"),
    (VNNI_WITH_LLAMA, ["onnx-fp32", "gguf-q8_0"], "llamacpp", "gguf-q8_0"),
    (Host(True, "a CUDA device is visible", True, int8_vnni=True), ALL, "onnx-cuda", "onnx-fp16"),
])
def test_auto(host, names, runtime, artifact):
    choice = select(manifest(*names), host=host)
    assert (choice.runtime, choice.artifact) == (runtime, artifact)
    assert choice.reason


def test_reasons_say_why():
    assert "no NVIDIA device is visible" in select(manifest(*ALL), host=CPU_ONLY).reason
    assert "llama-cpp-python is not installed" in select(manifest(*ALL), host=CPU_ONLY).reason
    assert "has VNNI" in select(manifest(*ALL), host=VNNI_WITH_LLAMA).reason


def test_explicit_choices():
    assert select(manifest(*ALL), "onnx-cpu", host=GPU).artifact == "onnx-int8"
    choice = select(manifest(*ALL), artifact="gguf-q4_k_m", host=CPU_WITH_LLAMA)
    assert (choice.runtime, choice.artifact) == ("llamacpp", "gguf-q4_k_m")
    assert select(manifest(*ALL), artifact="onnx-fp16", host=GPU).runtime == "onnx-cuda"
    assert select(manifest(*ALL), artifact="onnx-fp16", host=CPU_ONLY).runtime == "onnx-cpu"


@pytest.mark.parametrize("kwargs,host,message", [
    (dict(runtime="onnx-cuda"), CPU_ONLY, "onnx-cuda is not usable here: no NVIDIA device"),
    (dict(runtime="llamacpp"), CPU_ONLY, "needs llama-cpp-python"),
    (dict(runtime="tensorrt"), GPU, "unknown runtime 'tensorrt'"),
    (dict(artifact="gguf-q2_k"), GPU, "the bundle has no artifact 'gguf-q2_k'"),
    (dict(runtime="llamacpp", artifact="onnx-int8"), GPU, "llamacpp cannot run artifact onnx-int8"),
])
def test_errors(kwargs, host, message):
    with pytest.raises(SelectionError, match=message):
        select(manifest(*ALL), host=host, **kwargs)


def test_bundle_without_runtime_artifacts():
    with pytest.raises(SelectionError, match="no artifact for runtime onnx-cpu"):
        select(manifest("gguf-f16"), host=CPU_ONLY)
