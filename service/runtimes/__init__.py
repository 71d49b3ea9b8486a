"""Inference runtimes behind one interface, and the registry of their kinds.

Each runtime module owns what only it knows: how it opens an artifact, how it sizes its
context, which devices and providers it uses, and its batch policy. The rest of embedrpc asks
this registry.
"""

from __future__ import annotations

from embedrpc.service.runtimes import llamacpp_runtime, onnx_runtime, openvino_runtime
from embedrpc.service.runtimes.base import (
    Runtime,
    RuntimeFailure,
    RuntimeHealth,
    RuntimeKind,
    RuntimeOptions,
    RuntimeUnavailable,
)

KINDS: dict[str, RuntimeKind] = {kind.name: kind for kind in (
    onnx_runtime.CUDA, onnx_runtime.CPU, openvino_runtime.KIND, llamacpp_runtime.KIND)}
# The kind that runs an artifact when none is named: the CPU one for its format.
DEFAULT_KIND = {"onnx": "onnx-cpu", "gguf": "llamacpp", "openvino": "openvino-cpu"}

__all__ = ["DEFAULT_KIND", "KINDS", "Runtime", "RuntimeFailure", "RuntimeHealth", "RuntimeKind",
           "RuntimeOptions", "RuntimeUnavailable"]
