"""The runtimes embedrpc knows: one line per runtime module, and what follows from their
declarations (each module's `RuntimeSpec`: name, tier, formats, libraries, settings).

Adding a runtime is one module declaring its spec and one line in SPECS.
"""

from __future__ import annotations

from embedrpc.service.bundle.bundle import Bundle
from embedrpc.service.bundle.formats import FORMATS, Family
from embedrpc.service.bundle.manifest import BundleError
from embedrpc.service.runtimes import llamacpp_runtime, onnx_runtime, openvino_runtime
from embedrpc.service.runtimes.interface import (
    Runtime,
    RuntimeOptions,
    RuntimeSpec,
    Setting,
    options_for,
)

SPECS: list[RuntimeSpec] = [
    onnx_runtime.CUDA,
    onnx_runtime.CPU,
    openvino_runtime.SPEC,
    llamacpp_runtime.SPEC,
]
# Libraries every runtime's verdict depends on besides its own (tokenisation, numerics).
SHARED_LIBRARIES = ("tokenizers", "numpy")


def kinds() -> dict[str, RuntimeSpec]:
    """Every runtime by name, in declaration order."""
    return {spec.name: spec for spec in SPECS}


def spec(name: str) -> RuntimeSpec:
    found = kinds().get(name)
    if found is None:
        raise KeyError(f"no runtime {name!r}; known: {', '.join(kinds())}")
    return found


def default_for(family: Family) -> RuntimeSpec | None:
    """The runtime that runs a family's artifacts when none is named."""
    return next((s for s in SPECS if family in s.runs_by_default), None)


def libraries() -> tuple[str, ...]:
    """Distributions whose versions a self-check verdict depends on, every runtime's included."""
    names = [name for s in SPECS for name in s.libraries] + list(SHARED_LIBRARIES)
    return tuple(dict.fromkeys(names))


def settings() -> list[Setting]:
    """Every runtime's own settings (their names are unique across runtimes)."""
    found: dict[str, Setting] = {}
    for runtime in SPECS:
        for setting in runtime.settings:
            if setting.name in found:
                raise ValueError(f"runtime setting {setting.name!r} is declared twice")
            found[setting.name] = setting
    return list(found.values())


def runtime_for(bundle: Bundle, artifact_name: str, kind: str | None = None) -> RuntimeSpec:
    """The runtime of `kind` (default: the one for the artifact's family) that serves it."""
    artifact = bundle.manifest.artifact(artifact_name)
    chosen = kinds().get(kind) if kind else default_for(FORMATS[artifact.name].family)
    if chosen is None or not chosen.serves(artifact.name):
        raise BundleError(f"artifact {artifact.name!r} ({artifact.format}) cannot run on "
                          f"runtime {kind or 'any'}")
    return chosen


def open_runtime(bundle: Bundle, artifact_name: str, options: RuntimeOptions | None = None,
                 kind: str | None = None) -> Runtime:
    """A runtime of `kind` (default: the CPU one for the artifact's family) over an artifact,
    opened with `options` (default: the bundle's)."""
    chosen = runtime_for(bundle, artifact_name, kind)
    return chosen.open(bundle, bundle.manifest.artifact(artifact_name),
                       options or options_for(bundle))
