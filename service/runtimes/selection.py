"""Which runtime and artifact serve a bundle on this host: the one place this rule lives.

The rule names candidates; each is then proved on this host by a self-check in a child process
(service/runtimes/selfcheck.py: it loads, embeds the bundle's parity probes, meets the
artifact's bar, and is timed), and the choice is made from those verdicts, never from
assumptions about a CPU:

`auto`: the runtimes of the first tier (service/runtimes/interface.py: GPU, then CPU) where
one passes: in each runtime's family the first artifact that passes (each runtime declares its
artifacts best first), and of those the one the self-check measured fastest on this host. With
today's runtimes: a visible CUDA device with onnxruntime's CUDA provider -> onnx-cuda (fp16,
else fp32); otherwise onnxruntime (int8, else fp32, fp16), OpenVINO (int8, else bf16) and
llama.cpp (Q8_0, else F16, BF16, Q4_K_M). `--runtime` narrows to one family, `--artifact` to
one candidate, which must pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from embedrpc.service.bundle.manifest import Manifest
from embedrpc.service.errors import EmbedrpcError
from embedrpc.service.runtimes import registry
from embedrpc.service.runtimes.interface import Tier

AUTO = "auto"


def runtime_choices() -> tuple[str, ...]:
    """What --runtime takes: auto, or one runtime by name."""
    return (AUTO, *registry.kinds())


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
        return cls({name: kind.available() for name, kind in registry.kinds().items()})

    def can(self, kind: str) -> bool:
        return self.kinds.get(kind, (False, ""))[0]

    def why(self, kind: str) -> str:
        return self.kinds.get(kind, (False, f"no runtime {kind}"))[1]


def plan(manifest: Manifest, runtime: str = AUTO, artifact: str | None = None,
         host: Host | None = None) -> Plan:
    """The candidates to self-check for this bundle, host and request."""
    kinds = registry.kinds()
    if runtime != AUTO and runtime not in kinds:
        raise SelectionError(f"unknown runtime {runtime!r}; choose from "
                             f"{', '.join(runtime_choices())}")
    host = host or Host.probe()
    present = [a.name for a in manifest.artifacts]
    if artifact is not None:
        if artifact not in present:
            raise SelectionError(f"the bundle has no artifact {artifact!r}; it has "
                                 f"{', '.join(present)}")
        serving = [name for name, kind in kinds.items() if kind.serves(artifact)
                   and (runtime == AUTO or name == runtime)]
        if not serving:
            raise SelectionError(f"runtime {runtime} cannot run artifact {artifact}")
        usable = [name for name in serving if host.can(name)]
        kind = (usable or serving)[0]
        _check_available(kind, host)
        return Plan((((Candidate(kind, artifact),),),), f"artifact {artifact} was requested",
                    requested=True)
    if runtime != AUTO:
        _check_available(runtime, host)
        family = _family(runtime, present)
        if not family:
            raise SelectionError(f"the bundle has no artifact for runtime {runtime} (it needs "
                                 f"one of {', '.join(map(str, kinds[runtime].artifacts))})")
        return Plan(((family,),), f"runtime {runtime} was requested", requested=True)
    tiers = [tier for tier in (
        tuple(_family(name, present) for name, kind in kinds.items()
              if kind.tier is level and host.can(name) and _family(name, present))
        for level in sorted(Tier)) if tier]
    reason = "; ".join(_why(kind, host) for kind in kinds.values()
                       if kind.tier is Tier.GPU or not host.can(kind.name))
    if not tiers:
        raise SelectionError(f"the bundle has no artifact any runtime here can serve ({reason})")
    return Plan(tuple(tiers), reason)


def _why(kind, host: Host) -> str:
    """A GPU runtime says why it is or is not usable; an unusable CPU runtime says why not."""
    if kind.tier is Tier.GPU and not host.can(kind.name):
        return f"no usable {kind.device} ({host.why(kind.name)})"
    return host.why(kind.name)


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
    return tuple(Candidate(runtime, spec.name) for spec in registry.spec(runtime).artifacts
                 if spec.name in present)
