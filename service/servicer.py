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
from embedrpc.service.wire import Malformed, add_service
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
SERVICE = pb.DESCRIPTOR.services_by_name["EmbeddingService"]


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
                    if isinstance(request, Malformed):
                        raise request.error()
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
        self._stream_readers: set[asyncio.Task] = set()
        self._draining = False

    def add_to(self, server) -> None:
        add_service(server, SERVICE, self, pb)

    def drain(self) -> None:
        """Shutting down: streams stop reading, answer what they read, and end UNAVAILABLE."""
        self._draining = True
        for reader in list(self._stream_readers):
            reader.cancel()

    @_unary("Embed")
    async def Embed(self, request, context):
        return await self._embed(request)

    async def EmbedStream(self, request_iterator, context):
        """Requests answered in order. Up to STREAM_WINDOW are in flight; while the queue is
        full they wait for room, so the reader stops and flow control holds the client back.
        A bad request ends the stream with its status, naming it; so does shutting down."""
        window: asyncio.Queue = asyncio.Queue(STREAM_WINDOW)
        reader = asyncio.ensure_future(self._read_stream(request_iterator, window))
        self._stream_readers.add(reader)
        try:
            while (entry := await window.get()) is not None:
                label, answer = entry
                try:
                    yield await answer
                except RequestError as error:
                    await context.abort(STATUS[error.kind], f"request {label}: {error}")
        finally:
            reader.cancel()
            self._stream_readers.discard(reader)
            while not window.empty():
                if (entry := window.get_nowait()) is not None:
                    _discard(entry[1])

    async def _read_stream(self, request_iterator, window: asyncio.Queue) -> None:
        """Feed `window` with (label, answer future) pairs, then None; never dies silently."""
        position = 0
        try:
            async for request in request_iterator:
                if isinstance(request, Malformed):
                    await window.put((f"#{position}", _failed(request.error())))
                    break
                await window.put((repr(request.id) if request.id else f"#{position}",
                                  asyncio.ensure_future(self._embed_recorded(request))))
                position += 1
        except asyncio.CancelledError:
            if self._draining:
                await window.put((f"#{position}", _failed(RequestError(
                    ErrorKind.UNAVAILABLE, "not read: the server is shutting down; send it "
                                           "and the rest again elsewhere"))))
        except Exception as exc:  # the client's side broke off; nothing is left to answer
            log.info("stream ended while reading: %s", exc)
        await window.put(None)

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

    async def _embed_recorded(self, request) -> pb.EmbedResponse:
        with recorded(self.metrics, "EmbedStream"):
            return await self._embed(request, wait_for_room=True)

    async def _embed(self, request, wait_for_room: bool = False) -> pb.EmbedResponse:
        embedded = await self.embedder.embed(list(request.inputs), embed_options(request),
                                             wait_for_room)
        return pb.EmbedResponse(id=request.id, embeddings=_embeddings(embedded),
                                dimensions=embedded.dims, usage=usage(embedded.token_counts),
                                model=self.embedder.manifest.source.public_name,
                                encoding=protocol.ENCODING_ENUMS[embedded.encoding])


def _discard(answer: asyncio.Future) -> None:
    """An answer nobody will read: cancelled, or its failure marked as seen."""
    if answer.done() and not answer.cancelled():
        answer.exception()
    answer.cancel()


def _failed(error: RequestError) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


def _embeddings(embedded: Embedded) -> list[pb.Embedding]:
    if embedded.encoding is Encoding.FLOAT32:
        return [pb.Embedding(values=row.tolist()) for row in embedded.rows]
    return [pb.Embedding(packed=row.tobytes()) for row in embedded.rows]
