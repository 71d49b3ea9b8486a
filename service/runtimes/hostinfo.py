"""What this host is: CPU model and instruction-set flags, and the native libraries installed.

Native kernels behave differently per CPU kind (llama.cpp's AMX kernels segfault on some Intel
Xeons, upstream llama.cpp#20824), so what was proved on one host is keyed by this fingerprint.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass

from embedrpc.service import __version__

_SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                "amx_int8", "amx_bf16", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve",
                "sve2", "sme")
ARM64 = ("aarch64", "arm64")
# Linux arm64 hwcaps (asm/hwcap.h): what the kernel, or qemu-user, says this CPU does. Arm
# kernels (ggml's, MLAS's, ACL's) choose by these, so these are the features reported.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_HWCAP = {0: "fp", 1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}


@dataclass(frozen=True)
class Cpu:
    model: str
    flags: frozenset[str]
    family_model: str = ""  # x86 "family 6 model 207": tells generic model names apart

    @property
    def has_amx(self) -> bool:
        """AMX tiles usable by this process (the kernel lists them only once it enables them)."""
        return "amx_tile" in self.flags or "amx_int8" in self.flags

    @property
    def simd_flags(self) -> list[str]:
        """The flags that decide which kernels run, e.g. ['avx2', 'avx512f', 'avx512_vnni']."""
        return [flag for flag in _SHOWN_FLAGS if flag in self.flags]

    @property
    def label(self) -> str:
        """e.g. 'Intel(R) Xeon(R) Processor, family 6 model 207 (avx2, avx512f, ...)'."""
        name = f"{self.model}, {self.family_model}" if self.family_model else self.model
        return f"{name} ({', '.join(self.simd_flags) or 'no SIMD flags read'})"


@functools.cache
def cpu() -> Cpu:
    """The first processor's entry of /proc/cpuinfo (x86 and Arm field names)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip() and fields:
                    break
                key, colon, value = line.partition(":")
                if colon:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if platform.machine().lower() in ARM64:
        return _arm64_cpu(fields)
    model = fields.get("model name") or fields.get("Model") or platform.processor() \
        or platform.machine() or "unknown CPU"
    family_model = f"family {fields['cpu family']} model {fields['model']}" \
        if "cpu family" in fields and "model" in fields else ""
    return Cpu(model, frozenset((fields.get("flags") or fields.get("Features") or "").split()),
               family_model)


def _arm64_cpu(fields: dict[str, str]) -> Cpu:
    """An arm64 CPU by its hwcaps. Under qemu-user (before qemu 8.2) /proc/cpuinfo is the x86
    host's, so the model says so instead of naming the host's CPU as this one."""
    flags = frozenset(_hwcaps())
    if "Features" in fields or "CPU implementer" in fields:
        model = fields.get("model name") or (
            f"aarch64 CPU implementer {fields.get('CPU implementer', '?')} part "
            f"{fields.get('CPU part', '?')}")
    elif fields.get("model name"):
        model = f"aarch64 under emulation (/proc/cpuinfo shows the host: {fields['model name']})"
    else:
        model = "aarch64"
    return Cpu(model, flags)


def _hwcaps() -> list[str]:
    try:
        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        libc.getauxval.argtypes = [ctypes.c_ulong]
        words = (libc.getauxval(_AT_HWCAP), libc.getauxval(_AT_HWCAP2))
    except (OSError, AttributeError):
        return []
    return [name for word, names in zip(words, (_HWCAP, _HWCAP2), strict=True)
            for bit, name in names.items() if word >> bit & 1]


def library_versions(libraries: tuple[str, ...]) -> dict[str, str]:
    """embedrpc's, Python's and each installed library's version."""
    versions = {"embedrpc": __version__, "python": platform.python_version()}
    for name in libraries:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def fingerprint(libraries: tuple[str, ...]) -> dict:
    """What a verdict about native code on this host depends on (no secrets, no paths):
    the CPU, its flags, the GPUs, and the versions of `libraries` (the runtimes' own)."""
    host = cpu()
    return {"cpu": host.model, "family_model": host.family_model, "machine": platform.machine(),
            "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(host.flags)).encode()).hexdigest(),
            "libraries": library_versions(libraries), "gpu": _gpu_models()}


def _gpu_models() -> list[str]:
    import glob

    models = []
    for path in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(path) as information:
                models += [line.split(":", 1)[1].strip() for line in information
                           if line.startswith("Model:")]
        except OSError:
            continue
    return models
