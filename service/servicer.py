"""The embedrpc.v1.EmbeddingService implementation: request checks, tokenisation, scheduling
and output encoding. Every failure leaves as a gRPC status with a message saying what to fix."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np

from embedrpc.service import __version__
from embedrpc.service.encoding import Calibration, Encoding, matryoshka, quantize
from embedrpc.service.manifest import Manifest
from embedrpc.service.scheduler import InferenceFailed, QueueFull, Scheduler, ShuttingDown
from embedrpc.service.selection import Choice
from embedrpc.service.tokenization import BundleTokenizer, InputTooLong, Truncation
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

TASK_PROMPTS = {pb.TASK_QUERY: "query", pb.TASK_DOCUMENT: "document"}
TRUNCATIONS = {pb.TRUNCATION_UNSPECIFIED: Truncation.NONE, pb.TRUNCATION_RIGHT: Truncation.RIGHT,
               pb.TRUNCATION_LEFT: Truncation.LEFT}
ENCODINGS = {pb.ENCODING_UNSPECIFIED: Encoding.FLOAT32, pb.ENCODING_FLOAT32: Encoding.FLOAT32,
             pb.ENCODING_INT8: Encoding.INT8, pb.ENCODING_UINT8: Encoding.UINT8,
             pb.ENCODING_BINARY: Encoding.BINARY, pb.ENCODING_UBINARY: Encoding.UBINARY}
ENCODING_ENUMS = {Encoding.FLOAT32: pb.ENCODING_FLOAT32, Encoding.INT8: pb.ENCODING_INT8,
                  Encoding.UINT8: pb.ENCODING_UINT8, Encoding.BINARY: pb.ENCODING_BINARY,
                  Encoding.UBINARY: pb.ENCODING_UBINARY}
STREAM_WINDOW = 32  # requests of one stream in flight at once (the rest wait: backpressure)


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.request_id = ""


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class ServingLimits:
    max_batch_tokens: int
    max_queue: int
    max_input_tokens: int


@dataclass(frozen=True)
class _Plan:
    prompt: str
    truncation: Truncation
    dims: int
    normalize: bool
    encoding: Encoding


@contextlib.contextmanager
def _recorded(metrics, method: str):
    """Count the RPC by status code and time it."""
    started = time.monotonic()
    code = grpc.StatusCode.OK
    try:
        yield
    except RequestError as error:
        code = error.code
        raise
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    finally:
        metrics.requests.labels(method, code.name).inc()
        metrics.request_seconds.labels(method).observe(time.monotonic() - started)


def _observed(method: str):
    """Record the RPC and turn a RequestError into its status."""

    def wrap(handler):
        @functools.wraps(handler)
        async def run(self, request, context):
            try:
                with _recorded(self.metrics, method):
                    return await handler(self, request, context)
            except RequestError as error:
                await context.abort(error.code, str(error))

        return run

    return wrap


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, manifest: Manifest, tokenizer: BundleTokenizer, scheduler: Scheduler,
                 choice: Choice, limits: ServingLimits):
        self.manifest, self.tokenizer, self.scheduler = manifest, tokenizer, scheduler
        self.choice, self.limits, self.metrics = choice, limits, scheduler.metrics
        self.calibration = Calibration.from_manifest(manifest.calibration, manifest.hidden_size)
        self._tokenize_pool = ThreadPoolExecutor(2, thread_name_prefix="embedrpc-tokenize")

    # -- RPCs ---------------------------------------------------------------------------------
    @_observed("Embed")
    async def Embed(self, request, context):
        return await self._embed(request)

    async def EmbedStream(self, request_iterator, context):
        window: asyncio.Queue = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            async for request in request_iterator:
                await window.put(asyncio.ensure_future(self._embed_counted(request, "EmbedStream")))
            await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await window.get()) is not None:
                try:
                    yield await task
                except RequestError as error:
                    await context.abort(error.code, f"request {error.request_id!r}: {error}")
            await reader
        finally:
            reader.cancel()
            while not window.empty():
                if (task := window.get_nowait()) is not None:
                    task.cancel()

    @_observed("Tokenize")
    async def Tokenize(self, request, context):
        plan = self._plan(request.inputs, request.task, request.truncation, None, None,
                          pb.ENCODING_UNSPECIFIED)
        sequences = await self._tokenize(list(request.inputs), plan)
        return pb.TokenizeResponse(
            results=[pb.TokenizedInput(ids=ids, tokens=self.tokenizer.tokens_of(ids))
                     for ids in sequences],
            usage=_usage(sequences))

    @_observed("GetInfo")
    async def GetInfo(self, request, context):
        manifest, limits = self.manifest, self.limits
        return pb.GetInfoResponse(
            model=manifest.source.model, revision=manifest.source.revision or "",
            task=manifest.source.task or "", runtime=self.scheduler.runtime.name,
            runtime_reason=self.choice.reason, artifact=self.choice.artifact,
            precision=self.scheduler.runtime.precision, hidden_size=manifest.hidden_size,
            matryoshka_dimensions=manifest.matryoshka_dims,
            max_input_tokens=limits.max_input_tokens, prompts=manifest.prompts,
            default_prompt_name=manifest.default_prompt_name,
            max_batch_tokens=limits.max_batch_tokens, max_queue=limits.max_queue,
            server_version=__version__)

    # -- the work -----------------------------------------------------------------------------
    async def _embed_counted(self, request, method: str):
        with _recorded(self.metrics, method):
            try:
                return await self._embed(request)
            except RequestError as error:
                error.request_id = request.id
                raise

    async def _embed(self, request) -> pb.EmbedResponse:
        plan = self._plan(request.inputs, request.task, request.truncation,
                          request.dimensions if request.HasField("dimensions") else None,
                          request.normalize if request.HasField("normalize") else None,
                          request.encoding)
        sequences = await self._tokenize(list(request.inputs), plan)
        try:
            vectors = await self.scheduler.embed(sequences)
        except QueueFull as exc:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from exc
        except ShuttingDown as exc:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        except InferenceFailed as exc:
            raise RequestError(grpc.StatusCode.INTERNAL, str(exc)) from exc
        return self._response(request.id, vectors, sequences, plan)

    def _plan(self, inputs, task, truncation, dimensions, normalize, encoding) -> _Plan:
        if not inputs:
            raise _invalid("inputs is empty; send at least one text")
        if len(inputs) > self.limits.max_queue:
            raise _invalid(f"{len(inputs)} inputs is over this server's queue of "
                           f"{self.limits.max_queue}; split the request")
        for index, text in enumerate(inputs):
            if not text:
                raise _invalid(f"input {index} is empty")
        if task == pb.TASK_UNSPECIFIED:
            prompt_name = self.manifest.default_prompt_name
        elif task in TASK_PROMPTS:
            prompt_name = TASK_PROMPTS[task]
        else:
            raise _invalid(f"task {task} is not a known Task")
        if prompt_name not in self.manifest.prompts:
            raise _invalid(f"this model has no {prompt_name!r} prompt")
        if truncation not in TRUNCATIONS:
            raise _invalid(f"truncation {truncation} is not a known Truncation")
        if encoding not in ENCODINGS:
            raise _invalid(f"encoding {encoding} is not a known Encoding")
        dims = self.manifest.hidden_size if dimensions is None else dimensions
        if dims not in self.manifest.matryoshka_dims:
            raise _invalid(f"dimensions {dims} is not one of {self.manifest.matryoshka_dims}")
        plan = _Plan(self.manifest.prompts[prompt_name], TRUNCATIONS[truncation], dims,
                     True if normalize is None else normalize, ENCODINGS[encoding])
        if plan.encoding in (Encoding.INT8, Encoding.UINT8):
            try:
                self.calibration.range_for(plan.dims, plan.normalize)
            except KeyError as exc:
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"{exc.args[0]}; re-export the bundle") from exc
        return plan

    async def _tokenize(self, inputs: list[str], plan: _Plan) -> list[list[int]]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._tokenize_pool, self.tokenizer.encode, inputs, plan.prompt,
                plan.truncation, self.limits.max_input_tokens)
        except InputTooLong as exc:
            raise _invalid(str(exc)) from exc

    def _response(self, request_id: str, vectors: np.ndarray, sequences: list[list[int]],
                  plan: _Plan) -> pb.EmbedResponse:
        shaped = matryoshka(vectors, plan.dims, plan.normalize)
        value_range = self.calibration.range_for(plan.dims, plan.normalize) \
            if plan.encoding in (Encoding.INT8, Encoding.UINT8) else None
        encoded = quantize(shaped, plan.encoding, value_range)
        if plan.encoding is Encoding.FLOAT32:
            embeddings = [pb.Embedding(values=row.tolist()) for row in encoded]
        else:
            embeddings = [pb.Embedding(packed=row.tobytes()) for row in encoded]
        return pb.EmbedResponse(id=request_id, embeddings=embeddings, dimensions=plan.dims,
                                usage=_usage(sequences), model=self.manifest.source.model,
                                encoding=ENCODING_ENUMS[plan.encoding])

    def close(self) -> None:
        self._tokenize_pool.shutdown(wait=False)


def _usage(sequences: list[list[int]]) -> pb.Usage:
    counts = [len(s) for s in sequences]
    return pb.Usage(input_tokens=sum(counts), input_token_counts=counts)
