"""embedrpc.v1.EmbeddingService over gRPC: converts messages to and from the core's types
(service/core.py) and maps every core error to its status code in one table."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import grpc

from embedrpc.service import protocol
from embedrpc.service.core import Embedded, Embedder, EmbedOptions
from embedrpc.service.encoding import Encoding
from embedrpc.service.errors import ErrorKind, RequestError
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

log = logging.getLogger("embedrpc")
STATUS = {ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
          ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
          ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
          ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
          ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL}
UNEXPECTED = RequestError(ErrorKind.INTERNAL, "internal error; the server's log has the details")
STREAM_WINDOW = 32  # requests of one stream in flight at once (the rest wait: backpressure)


@contextlib.contextmanager
def recorded(metrics, method: str):
    """Count the RPC by status code and time it; anything unexpected is logged and becomes
    INTERNAL (and is counted so)."""
    started = time.monotonic()
    code = grpc.StatusCode.OK
    try:
        yield
    except RequestError as error:
        code = STATUS[error.kind]
        raise
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        code = STATUS[UNEXPECTED.kind]
        log.exception("unexpected failure in %s", method)
        raise UNEXPECTED from exc
    finally:
        metrics.requests.labels(method, code.name).inc()
        metrics.request_seconds.labels(method).observe(time.monotonic() - started)


def _unary(method: str):
    """Record the RPC and turn a RequestError into its status."""

    def wrap(handler):
        @functools.wraps(handler)
        async def run(self, request, context):
            try:
                with recorded(self.metrics, method):
                    return await handler(self, request, context)
            except RequestError as error:
                await context.abort(STATUS[error.kind], str(error))

        return run

    return wrap


def embed_options(request) -> EmbedOptions:
    return EmbedOptions(
        prompt_name=protocol.prompt_name(request.task),
        truncation=protocol.truncation(request.truncation),
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        normalize=request.normalize if request.HasField("normalize") else None,
        encoding=protocol.encoding(request.encoding))


def usage(token_counts: list[int]) -> pb.Usage:
    return pb.Usage(input_tokens=sum(token_counts), input_token_counts=token_counts)


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, embedder: Embedder, metrics):
        self.embedder, self.metrics = embedder, metrics

    @_unary("Embed")
    async def Embed(self, request, context):
        return await self._embed(request)

    async def EmbedStream(self, request_iterator, context):
        window: asyncio.Queue = asyncio.Queue(STREAM_WINDOW)

        async def read() -> None:
            async for request in request_iterator:
                await window.put((request.id, asyncio.ensure_future(
                    self._embed_recorded(request, "EmbedStream"))))
            await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (entry := await window.get()) is not None:
                request_id, task = entry
                try:
                    yield await task
                except RequestError as error:
                    await context.abort(STATUS[error.kind], f"request {request_id!r}: {error}")
            await reader
        finally:
            reader.cancel()
            while not window.empty():
                if (entry := window.get_nowait()) is not None:
                    entry[1].cancel()

    @_unary("Tokenize")
    async def Tokenize(self, request, context):
        options = EmbedOptions(prompt_name=protocol.prompt_name(request.task),
                               truncation=protocol.truncation(request.truncation))
        tokenized = await self.embedder.tokenize(list(request.inputs), options)
        return pb.TokenizeResponse(
            results=[pb.TokenizedInput(ids=ids, tokens=tokens)
                     for ids, tokens in zip(tokenized.ids, tokenized.tokens, strict=True)],
            usage=usage([len(ids) for ids in tokenized.ids]))

    @_unary("GetInfo")
    async def GetInfo(self, request, context):
        info = self.embedder.info()
        return pb.GetInfoResponse(
            model=info.model, revision=info.revision, task=info.task, runtime=info.runtime,
            runtime_reason=info.runtime_reason, artifact=info.artifact,
            precision=info.precision, hidden_size=info.hidden_size,
            matryoshka_dimensions=info.matryoshka_dims, max_input_tokens=info.max_input_tokens,
            prompts=info.prompts, default_prompt_name=info.default_prompt_name,
            max_batch_tokens=info.max_batch_tokens, max_queue=info.max_queue,
            server_version=info.server_version)

    async def _embed_recorded(self, request, method: str) -> pb.EmbedResponse:
        with recorded(self.metrics, method):
            return await self._embed(request)

    async def _embed(self, request) -> pb.EmbedResponse:
        embedded = await self.embedder.embed(list(request.inputs), embed_options(request))
        return pb.EmbedResponse(id=request.id, embeddings=_embeddings(embedded),
                                dimensions=embedded.dims, usage=usage(embedded.token_counts),
                                model=self.embedder.manifest.source.model,
                                encoding=protocol.ENCODING_ENUMS[embedded.encoding])


def _embeddings(embedded: Embedded) -> list[pb.Embedding]:
    if embedded.encoding is Encoding.FLOAT32:
        return [pb.Embedding(values=row.tolist()) for row in embedded.rows]
    return [pb.Embedding(packed=row.tobytes()) for row in embedded.rows]
