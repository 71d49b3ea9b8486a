"""Which runtime and artifact serve a bundle on this host: the one place this rule lives.

`auto`: a visible CUDA device with onnxruntime's CUDA provider -> `onnx-cuda` (fp16 artifact);
otherwise, on an x86 CPU with VNNI int8 instructions, `onnx-cpu` int8 (benchmarks/results: 3.1x
the tokens/s of llama.cpp Q8_0 and a third of its latency at the 0.6B shape on AVX-512 VNNI);
otherwise llama.cpp with the bundle's best GGUF (the design's choice for CPU and edge hosts);
otherwise `onnx-cpu` with int8, else fp32. Change this rule here and only here.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from embedrpc.service.manifest import Manifest

RUNTIMES = ("auto", "onnx-cuda", "onnx-cpu", "llamacpp")
# Preferred artifacts per runtime, best first.
PREFERENCE = {
    "onnx-cuda": ["onnx-fp16", "onnx-fp32"],
    "llamacpp": ["gguf-q8_0", "gguf-f16", "gguf-bf16", "gguf-q4_k_m"],
    "onnx-cpu": ["onnx-int8", "onnx-fp32", "onnx-fp16"],
}


class SelectionError(ValueError):
    """The requested runtime or artifact cannot serve this bundle on this host."""


@dataclass(frozen=True)
class Choice:
    runtime: str
    artifact: str
    reason: str

    @property
    def providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.runtime == "onnx-cuda" \
            else ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Host:
    cuda: bool
    cuda_reason: str
    llamacpp: bool
    int8_vnni: bool = False  # x86 AVX-512 VNNI or AVX-VNNI

    @classmethod
    def probe(cls) -> "Host":
        cuda, reason = _cuda_usable()
        return cls(cuda, reason, importlib.util.find_spec("llama_cpp") is not None,
                   _has_vnni())


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _cuda_usable() -> tuple[bool, str]:
    try:
        import onnxruntime
    except ImportError:
        return False, "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False, "onnxruntime has no CUDA execution provider (install the gpu extra)"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False, "CUDA_VISIBLE_DEVICES hides every GPU"
    if not any(os.path.exists(f"/dev/nvidia{i}") for i in range(16)):
        return False, "no NVIDIA device is visible"
    return True, "a CUDA device is visible and onnxruntime has its CUDA provider"


def select(manifest: Manifest, runtime: str = "auto", artifact: str | None = None,
           host: Host | None = None) -> Choice:
    if runtime not in RUNTIMES:
        raise SelectionError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    host = host or Host.probe()
    present = [a.name for a in manifest.artifacts]
    if artifact is not None:
        if artifact not in present:
            raise SelectionError(f"the bundle has no artifact {artifact!r}; it has "
                                 f"{', '.join(present)}")
        kinds = [r for r, names in PREFERENCE.items() if artifact in names
                 and (runtime == "auto" or r == runtime)]
        if not kinds:
            raise SelectionError(f"runtime {runtime} cannot run artifact {artifact}")
        kind = "onnx-cuda" if "onnx-cuda" in kinds and host.cuda else kinds[-1]
        _check_available(kind, host)
        return Choice(kind, artifact, f"artifact {artifact} was requested")
    if runtime != "auto":
        _check_available(runtime, host)
        return Choice(runtime, _best(runtime, present), f"runtime {runtime} was requested")
    if host.cuda and _best(present=present, runtime="onnx-cuda", required=False):
        return Choice("onnx-cuda", _best("onnx-cuda", present), host.cuda_reason)
    if host.int8_vnni and "onnx-int8" in present:
        return Choice("onnx-cpu", "onnx-int8",
                      f"no usable CUDA ({host.cuda_reason}); this x86 CPU has VNNI, where "
                      f"onnxruntime int8 outruns llama.cpp (benchmarks/results)")
    if host.llamacpp and _best("llamacpp", present, required=False):
        return Choice("llamacpp", _best("llamacpp", present),
                      f"no usable CUDA ({host.cuda_reason}); llama.cpp is the CPU/edge default")
    reason = f"no usable CUDA ({host.cuda_reason}); " + (
        "the bundle has no GGUF" if host.llamacpp else "llama-cpp-python is not installed")
    return Choice("onnx-cpu", _best("onnx-cpu", present), reason)


def _check_available(runtime: str, host: Host) -> None:
    if runtime == "onnx-cuda" and not host.cuda:
        raise SelectionError(f"runtime onnx-cuda is not usable here: {host.cuda_reason}")
    if runtime == "llamacpp" and not host.llamacpp:
        raise SelectionError("runtime llamacpp needs llama-cpp-python "
                             "(pip install 'embedrpc[llamacpp]')")


def _best(runtime: str, present: list[str], required: bool = True) -> str | None:
    for name in PREFERENCE[runtime]:
        if name in present:
            return name
    if required:
        raise SelectionError(f"the bundle has no artifact for runtime {runtime} (it needs one of "
                             f"{', '.join(PREFERENCE[runtime])})")
    return None
