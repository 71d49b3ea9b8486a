"""What every inference runtime is: its declaration, its options, its batch policy, its
interface. Each runtime module declares itself with a `RuntimeSpec` (service/runtimes/
registry.py lists them, one line each); nothing else in embedrpc names a runtime."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from embedrpc.service.bundle.formats import ArtifactFormat, Family
from embedrpc.service.errors import EmbedrpcError
from embedrpc.service.runtimes.batching import BatchPolicy, plan_batches

if TYPE_CHECKING:
    from pathlib import Path

    from embedrpc.service.bundle.bundle import Bundle
    from embedrpc.service.bundle.manifest import Artifact


class RuntimeFailure(EmbedrpcError):
    """An inference runtime failed to load or to run."""


class RuntimeUnavailable(RuntimeFailure):
    """The runtime cannot run this batch now (its worker crashed or is restarting): retry."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How a runtime is opened: the same for serving, its self-check and validation."""

    threads: int = 0  # 0: every core
    max_batch_tokens: int = 4096  # the token budget of one forward pass
    max_input_tokens: int = 0  # the longest single input it must take (0: the batch budget)
    padding_side: str = "right"  # where padded runtimes put padding
    compiled_cache: str = ""  # where a runtime may keep what it compiles (OpenVINO); "" none
    # A runtime's own settings by name (its RuntimeSpec.settings); unset ones take their default.
    settings: dict = field(default_factory=dict)

    def setting(self, declared: "Setting"):
        return self.settings.get(declared.name, declared.default)

    @property
    def context_tokens(self) -> int:
        """Room one forward pass needs: a full batch, or the longest input alone."""
        return max(self.max_batch_tokens, self.max_input_tokens)


DEFAULT_OPTIONS = RuntimeOptions()


def task_of(runtime: Runtime, task: str | None) -> str | None:
    """The adapter a batch runs with: `task`, or the runtime's default; refused (ValueError)
    when the runtime has no such adapter."""
    if task is None:
        return runtime.tasks[0] if runtime.tasks else None
    if task not in runtime.tasks:
        raise ValueError(f"this runtime has no adapter for task {task!r} (it has "
                         f"{', '.join(runtime.tasks) or 'none'})")
    return task


def adapter_files(bundle: "Bundle", family: Family) -> dict[str, "Path"]:
    """Each run-time task's adapter file in `family`'s form (empty for a merged bundle)."""
    from embedrpc.service.bundle.layout import inside

    return {task: inside(bundle.root, family.adapter_path(task))
            for task in bundle.manifest.tasks}


def options_for(bundle: "Bundle", **values) -> RuntimeOptions:
    """Runtime options for a bundle: padding on the side its manifest names."""
    return RuntimeOptions(**{"padding_side": bundle.manifest.tokenizer.padding_side, **values})


@dataclass(frozen=True)
class RuntimeHealth:
    serving: bool
    reason: str = ""


class Runtime(abc.ABC):
    """Turns token-id sequences into L2-normalised last-token embeddings."""

    name: str  # its RuntimeSpec's name
    precision: str  # the artifact's precision
    artifact: str  # the manifest artifact name in use
    policy: BatchPolicy  # which sequences may share one `embed_batch`
    tasks: tuple[str, ...] = ()  # run-time task adapters it holds, the default first

    @abc.abstractmethod
    def embed_batch(self, sequences: list[list[int]], task: str | None = None) -> np.ndarray:
        """One forward pass over `sequences` with `task`'s adapter (None: the default task;
        a runtime without adapters takes None only): float32 [len(sequences), hidden], unit
        rows."""

    def embed(self, sequences: list[list[int]], task: str | None = None) -> np.ndarray:
        """Embed any number of sequences, batched by the runtime's policy, in input order."""
        if not sequences:
            raise ValueError("no sequences to embed")
        out: np.ndarray | None = None
        for batch in plan_batches([len(s) for s in sequences], self.policy):
            vectors = self.embed_batch([sequences[i] for i in batch], task)
            if out is None:
                out = np.empty((len(sequences), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out

    def health(self) -> RuntimeHealth:
        """Whether the runtime can take batches now."""
        return RuntimeHealth(True)

    def watch(self, on_health: Callable[[bool], None]) -> None:  # noqa: B027 - optional
        """Have `on_health(serving)` called when the runtime goes down or comes back (from any
        thread). Runtimes that cannot go down on their own never call it."""

    def close(self) -> None:  # noqa: B027 - optional: most runtimes hold nothing to release
        """Release the runtime's resources."""


class Tier(enum.IntEnum):
    """Which runtimes auto-selection compares: a lower tier that passes its self-check wins;
    within a tier, the fastest that passed."""

    GPU = 0
    CPU = 1


@dataclass(frozen=True)
class Setting:
    """A runtime's own serving option: an `embedrpc serve` flag (and EMBEDRPC_* variable) and
    an entry of RuntimeOptions.settings."""

    name: str  # e.g. "kv_type": the flag --kv-type
    default: str | bool
    help: str
    choices: tuple[str, ...] | None = None  # for a str setting


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything the rest of embedrpc knows about a runtime, declared in its own module."""

    name: str  # what --runtime takes and GetInfo reports
    tier: Tier
    engine: str  # the library, as messages name it ("llama.cpp crashed (SIGSEGV) ...")
    artifacts: tuple[ArtifactFormat, ...]  # the bundle formats it serves, best first
    libraries: tuple[str, ...]  # distributions whose versions key the self-check's verdicts
    available: Callable[[], tuple[bool, str]]  # (usable on this host, why or why not)
    open: Callable[["Bundle", "Artifact", "RuntimeOptions"], "Runtime"]
    runs_by_default: tuple[Family, ...] = ()  # families it runs when no runtime is named
    settings: tuple[Setting, ...] = ()
    device: str = "CPU"  # what it runs on, as reasons name it ("no usable CUDA (...)")

    def serves(self, artifact_name: str) -> bool:
        return any(spec.name == artifact_name for spec in self.artifacts)


# A CPU computes every padded token: padded CPU batches hold padding within this many padded
# tokens per real token (0.6B fp32 was served at 0.44x raw before this bound).
CPU_MAX_PADDING_RATIO = 1.25


def pad(sequences: list[list[int]], pad_id: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence: (input_ids, attention_mask), both int64."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        span = slice(0, len(sequence)) if side == "right" \
            else slice(longest - len(sequence), longest)
        ids[row, span] = sequence
        mask[row, span] = 1
    return ids, mask
