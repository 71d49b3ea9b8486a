"""The transport-free core: what a request means and how it is answered, for every front.

    texts + EmbedOptions --plan()--> a validated plan (prompt, truncation, dims, encoding)
        --tokenizer--> token ids --cache (kept vectors; each distinct miss once)-->
        --scheduler (batches by the runtime's policy)--> unit vectors
        --Matryoshka--> dims, re-normalised --encoding--> float32 / int8 / uint8 / binary

Every failure is a `RequestError` whose `ErrorKind` each front maps to its status codes in one
table (service/fronts/status.py). Limits are checked here, before any work is queued.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from embedrpc.service import __version__
from embedrpc.service.bundle.manifest import Manifest
from embedrpc.service.bundle.tokenizer import BundleTokenizer, TokenDetail, Truncation
from embedrpc.service.core.cache import EmbeddingCache
from embedrpc.service.core.encoding import Calibration, Encoding, Range, matryoshka, quantize
from embedrpc.service.core.metrics import Metrics
from embedrpc.service.core.scheduler import Scheduler
from embedrpc.service.errors import ErrorKind, RequestError, invalid
from embedrpc.service.runtimes.selection import Choice

INPUTS = "inputs"  # the field of a request's texts, as errors name it


@dataclass(frozen=True)
class ServingLimits:
    max_batch_tokens: int
    max_queue: int
    max_input_tokens: int


@dataclass(frozen=True)
class EmbedOptions:
    """What a request asks for; None means the model's default."""

    prompt_name: str | None = None  # "query", "document", ...
    truncation: Truncation = Truncation.NONE
    dimensions: int | None = None  # a Matryoshka size
    normalize: bool | None = None  # re-normalise after Matryoshka truncation (default: yes)
    encoding: Encoding = Encoding.FLOAT32
    task: str | None = None  # the task (LoRA adapter) of a multi-task bundle


@dataclass(frozen=True)
class Plan:
    prompt: str
    truncation: Truncation
    dims: int
    normalize: bool
    encoding: Encoding
    value_range: Range | None  # int8/uint8 calibration range
    task: str | None  # the run-time adapter (None: a bundle of one merged task)


@dataclass(frozen=True)
class Embedded:
    rows: np.ndarray  # float32 [n, dims], or packed int8/uint8 rows
    dims: int
    encoding: Encoding
    token_counts: list[int]
    tokenize_ns: int = 0  # time spent tokenising
    total_ns: int = 0  # time from the request's arrival to its vectors


@dataclass(frozen=True)
class Tokenized:
    ids: list[list[int]]
    tokens: list[list[str]]


@dataclass(frozen=True)
class ModelInfo:
    """What GetInfo (and any front's info call) reports."""

    model: str
    revision: str
    task: str
    runtime: str
    runtime_reason: str
    artifact: str
    precision: str
    hidden_size: int
    matryoshka_dims: list[int]
    max_input_tokens: int
    prompts: dict[str, str]
    default_prompt_name: str
    max_batch_tokens: int
    max_queue: int
    tasks: list[str]  # the tasks a request may name (run-time adapters), the default first
    server_version: str = __version__


class Embedder:
    def __init__(self, manifest: Manifest, tokenizer: BundleTokenizer, scheduler: Scheduler,
                 choice: Choice, limits: ServingLimits, cache: EmbeddingCache | None = None,
                 metrics: Metrics | None = None):
        self.manifest, self.tokenizer, self.scheduler = manifest, tokenizer, scheduler
        self.cache, self.metrics = cache, metrics
        self.choice, self.limits = choice, limits
        self.calibration = Calibration.from_manifest(manifest.calibration, manifest.hidden_size)
        self._tokenize_pool = ThreadPoolExecutor(2, thread_name_prefix="embedrpc-tokenize")

    def info(self) -> ModelInfo:
        manifest, runtime = self.manifest, self.scheduler.runtime
        return ModelInfo(
            manifest.source.public_name, manifest.source.revision or "",
            manifest.default_task or "",
            runtime.name, self.choice.reason, self.choice.artifact, runtime.precision,
            manifest.hidden_size, list(manifest.matryoshka_dims), self.limits.max_input_tokens,
            dict(manifest.prompts), manifest.default_prompt_name, self.limits.max_batch_tokens,
            self.limits.max_queue, list(manifest.tasks))

    def plan(self, inputs: Sequence[str], options: EmbedOptions) -> Plan:
        """Check a request against the model and the limits; no work is done before this."""
        if not inputs:
            raise RequestError(ErrorKind.EMPTY, "inputs is empty; send at least one text",
                               INPUTS)
        if len(inputs) > self.limits.max_queue:
            raise invalid(f"{len(inputs)} inputs is over this server's queue of "
                          f"{self.limits.max_queue}; split the request", INPUTS)
        for index, text in enumerate(inputs):
            if not text:
                raise RequestError(ErrorKind.EMPTY, f"input {index} is empty", INPUTS)
        prompt_name = options.prompt_name or self.manifest.default_prompt_name
        if prompt_name not in self.manifest.prompts:
            raise invalid(f"this model has no {prompt_name!r} prompt; it has "
                          f"{', '.join(map(repr, self.manifest.prompts))}", "prompt_name")
        dims = self.manifest.hidden_size if options.dimensions is None else options.dimensions
        if dims not in self.manifest.matryoshka_dims:
            raise invalid(f"dimensions {dims} is not one of {self.manifest.matryoshka_dims}",
                          "dimensions")
        normalize = True if options.normalize is None else options.normalize
        value_range = self.calibration.range_for(dims, normalize) \
            if options.encoding in (Encoding.INT8, Encoding.UINT8) else None
        return Plan(self.manifest.prompts[prompt_name], options.truncation, dims, normalize,
                    options.encoding, value_range, self._task(options.task))

    def _task(self, task: str | None) -> str | None:
        """The adapter a request runs with: its task, else the bundle's default; a bundle of
        one merged task takes only that task's name (or none)."""
        tasks, merged = self.manifest.tasks, self.manifest.source.task
        if not tasks:
            if task is not None and task != merged:
                serves = f"task {merged!r}" if merged else "one task"
                raise invalid(f"this model serves {serves}, not {task!r}", "task")
            return None
        if task is None:
            return tasks[0]
        if task not in tasks:
            raise invalid(f"this model has no task {task!r}; it has {', '.join(tasks)}", "task")
        return task

    async def embed(self, inputs: Sequence[str], options: EmbedOptions,
                    wait_for_room: bool = False) -> Embedded:
        """`wait_for_room`: wait while the queue is full instead of RESOURCE_EXHAUSTED."""
        started = time.perf_counter_ns()
        plan = self.plan(inputs, options)
        sequences = await self._tokenize(list(inputs), plan)
        tokenized = time.perf_counter_ns()
        if self.metrics is not None:
            self.metrics.task_inputs.labels(plan.task or "default").inc(len(sequences))
        if self.cache is None:
            vectors = await self.scheduler.embed(sequences, wait_for_room, plan.task)
        else:
            vectors = await self.cache.embed(sequences, plan.task, lambda missing: (
                self.scheduler.embed(missing, wait_for_room, plan.task)))
        shaped = matryoshka(vectors, plan.dims, plan.normalize)
        return Embedded(quantize(shaped, plan.encoding, plan.value_range), plan.dims,
                        plan.encoding, [len(s) for s in sequences], tokenized - started,
                        time.perf_counter_ns() - started)

    async def tokenize(self, inputs: Sequence[str], options: EmbedOptions) -> Tokenized:
        sequences = await self._tokenize(list(inputs), self.plan(inputs, options))
        return Tokenized(sequences, [self.tokenizer.tokens_of(ids) for ids in sequences])

    async def describe_tokens(self, text: str, prompt_name: str | None,
                              add_special: bool) -> list[TokenDetail]:
        """The tokens of prompt + text with their spans (a TEI-style Tokenize)."""
        plan = self.plan([text], EmbedOptions(prompt_name=prompt_name))
        full = plan.prompt + text
        limit = self.tokenizer.max_chars(self.limits.max_input_tokens)
        if len(full) > limit:
            raise invalid(f"the text has {len(full)} characters, over the {limit} that "
                          f"{self.limits.max_input_tokens} tokens can cover", INPUTS)
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenize_pool, self.tokenizer.describe, full, add_special)

    async def decode_inputs(self, items: Sequence[str | list[int]]) -> list[str]:
        """Texts for inputs that may be token ids: an id list (of the bare text, in this
        model's vocabulary) is embedded as the text it decodes to, special tokens kept, so
        ids and their text give the same vector (prompt and EOS added alike)."""
        texts = []
        for index, item in enumerate(items):
            if isinstance(item, str):
                texts.append(item)
                continue
            if not item:
                raise RequestError(ErrorKind.EMPTY, f"input {index} has no token ids", INPUTS)
            try:
                texts.append(await self.decode(item, skip_special=False))
            except RequestError as error:
                raise invalid(f"input {index}: {error}", INPUTS) from None
        return texts

    async def decode(self, ids: list[int], skip_special: bool) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenize_pool, self.tokenizer.decode, ids, skip_special)

    async def _tokenize(self, inputs: list[str], plan: Plan) -> list[list[int]]:
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenize_pool, self.tokenizer.encode, inputs, plan.prompt, plan.truncation,
            self.limits.max_input_tokens)

    def close(self) -> None:
        self._tokenize_pool.shutdown(wait=False)


__all__ = ["EmbedOptions", "Embedded", "Embedder", "ErrorKind", "ModelInfo", "Plan",
           "RequestError", "ServingLimits", "Tokenized"]
