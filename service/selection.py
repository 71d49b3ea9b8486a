"""Which runtime and artifact serve a bundle on this host: the one place this rule lives.

The rule names candidates; each is then proved on this host by a self-check in a child process
(service/selfcheck.py: it loads, embeds the bundle's parity probes, meets the artifact's bar,
and is timed), and the choice is made from those verdicts, never from assumptions about a CPU:

`auto`: a visible CUDA device with onnxruntime's CUDA provider -> `onnx-cuda` (fp16, else fp32)
if it passes; otherwise the CPU families, onnxruntime (int8, else fp32, fp16), OpenVINO (int8,
else bf16) and llama.cpp (Q8_0, else F16, BF16, Q4_K_M): in each family the first artifact that
passes, and of those the one the self-check measured fastest on this host. `--runtime` narrows
to one family, `--artifact` to one candidate, which must pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from embedrpc.service.errors import EmbedrpcError
from embedrpc.service.manifest import Manifest
from embedrpc.service.runtimes import KINDS

RUNTIMES = ("auto", *KINDS)
CPU_KINDS = ("onnx-cpu", "openvino-cpu", "llamacpp")  # compared by the self-check's timing
GPU_KINDS = ("onnx-cuda",)  # preferred to any CPU kind that passes


class SelectionError(EmbedrpcError):
    """The requested runtime or artifact cannot serve this bundle on this host."""


@dataclass(frozen=True)
class Candidate:
    runtime: str
    artifact: str

    def __str__(self) -> str:
        return f"{self.runtime} {self.artifact}"


Family = tuple[Candidate, ...]  # one runtime's artifacts, best first


@dataclass(frozen=True)
class Plan:
    """Candidates in tiers: the first tier where some family passes wins, and within it the
    fastest family winner. A requested plan fails instead of falling back."""

    tiers: tuple[tuple[Family, ...], ...]
    reason: str
    requested: bool = False


@dataclass(frozen=True)
class Verdict:
    """What the self-check found for one candidate on this host."""

    candidate: Candidate
    passed: bool
    failure: str = ""  # "crashed (SIGSEGV)", "min cosine 0.91 is below its bar 0.995", ...
    min_cosine: float | None = None
    tokens_per_s: float | None = None
    cached: bool = False

    def describe(self) -> str:
        cached = " [cached]" if self.cached else ""
        if self.passed:
            return (f"{self.candidate}: passed self-check ({self.tokens_per_s:.0f} tokens/s, "
                    f"min cos {self.min_cosine:.5f}){cached}")
        return f"{self.candidate}: {self.failure} in self-check{cached}"


@dataclass(frozen=True)
class Choice:
    runtime: str
    artifact: str
    reason: str


@dataclass(frozen=True)
class Host:
    """Which runtime kinds this host can use, each with why or why not."""

    kinds: dict[str, tuple[bool, str]]

    @classmethod
    def probe(cls) -> "Host":
        return cls({name: kind.available() for name, kind in KINDS.items()})

    def can(self, kind: str) -> bool:
        return self.kinds.get(kind, (False, ""))[0]

    def why(self, kind: str) -> str:
        return self.kinds.get(kind, (False, f"no runtime {kind}"))[1]


def plan(manifest: Manifest, runtime: str = "auto", artifact: str | None = None,
         host: Host | None = None) -> Plan:
    """The candidates to self-check for this bundle, host and request."""
    if runtime not in RUNTIMES:
        raise SelectionError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    host = host or Host.probe()
    present = [a.name for a in manifest.artifacts]
    if artifact is not None:
        if artifact not in present:
            raise SelectionError(f"the bundle has no artifact {artifact!r}; it has "
                                 f"{', '.join(present)}")
        kinds = [name for name, kind in KINDS.items() if artifact in kind.artifacts
                 and (runtime == "auto" or name == runtime)]
        if not kinds:
            raise SelectionError(f"runtime {runtime} cannot run artifact {artifact}")
        usable = [name for name in kinds if host.can(name)]
        kind = (usable or kinds)[0]
        _check_available(kind, host)
        return Plan((((Candidate(kind, artifact),),),), f"artifact {artifact} was requested",
                    requested=True)
    if runtime != "auto":
        _check_available(runtime, host)
        family = _family(runtime, present)
        if not family:
            raise SelectionError(f"the bundle has no artifact for runtime {runtime} (it needs "
                                 f"one of {', '.join(KINDS[runtime].artifacts)})")
        return Plan(((family,),), f"runtime {runtime} was requested", requested=True)
    tiers = [tier for tier in (
        tuple(_family(k, present) for k in GPU_KINDS if host.can(k) and _family(k, present)),
        tuple(_family(k, present) for k in CPU_KINDS if host.can(k) and _family(k, present)))
        if tier]
    gpu = GPU_KINDS[0]
    reason = host.why(gpu) if host.can(gpu) else f"no usable CUDA ({host.why(gpu)})"
    reason += "".join(f"; {host.why(k)}" for k in CPU_KINDS if not host.can(k))
    if not tiers:
        raise SelectionError(f"the bundle has no artifact any runtime here can serve ({reason})")
    return Plan(tuple(tiers), reason)


def choose(chosen_plan: Plan, check: Callable[[Candidate], Verdict]) -> Choice:
    """Self-check candidates tier by tier (`check` proves one) and choose from the verdicts."""
    verdicts: list[Verdict] = []
    for tier in chosen_plan.tiers:
        winners = []
        for family in tier:
            for candidate in family:
                verdicts.append(check(candidate))
                if verdicts[-1].passed:
                    winners.append(verdicts[-1])
                    break
        if winners:
            best = max(winners, key=lambda verdict: verdict.tokens_per_s or 0.0)
            why = "the fastest that passed" if len(winners) > 1 else "passed"
            reason = "; ".join([chosen_plan.reason, *(v.describe() for v in verdicts),
                                f"chose {best.candidate} ({why})"])
            return Choice(best.candidate.runtime, best.candidate.artifact, reason)
    found = "; ".join(v.describe() for v in verdicts)
    if chosen_plan.requested:
        raise SelectionError(f"{chosen_plan.reason}, but it failed its self-check on this "
                             f"host: {found}")
    raise SelectionError(f"no runtime passed its self-check on this host: {found}")


def _check_available(runtime: str, host: Host) -> None:
    if not host.can(runtime):
        raise SelectionError(f"runtime {runtime} is not usable here: {host.why(runtime)}")


def _family(runtime: str, present: list[str]) -> Family:
    return tuple(Candidate(runtime, name) for name in KINDS[runtime].artifacts
                 if name in present)
