"""gRPC plumbing every gRPC front shares (service/fronts/grpc_embedrpc.py for embedrpc.v1,
service/fronts/grpc_tei.py for tei.v1): per-RPC metrics and status codes (from the table in
service/fronts/status.py), requests parsed without ever raising, and ordered streams with
backpressure and a clean shutdown.

The generated `add_*Servicer_to_server` functions deserialize with `FromString`, whose
DecodeError (bad bytes, invalid UTF-8 in a string) gRPC reports as an unexpected exception;
`add_service` registers methods with deserializers that turn it into INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

from embedrpc.service.errors import ErrorKind, RequestError
from embedrpc.service.fronts.drain import REFUSED, Drain
from embedrpc.service.fronts.status import GRPC_STATUS as STATUS
from embedrpc.service.fronts.status import UNEXPECTED

log = logging.getLogger("embedrpc")
STREAM_WINDOW = 32  # requests of one stream in flight at once (the rest wait: backpressure)
OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"  # probes need no key and are never refused


@dataclass(frozen=True)
class Malformed:
    """What arrived instead of a request message."""

    message_type: str
    reason: str

    def error(self, where: str = ""):
        log.warning("malformed %s%s: %s", self.message_type, where, self.reason)
        return RequestError(ErrorKind.MALFORMED,
                            f"malformed {self.message_type}{where}: {self.reason}")


def tolerant(message_class):
    """A request deserializer that returns `Malformed` instead of raising."""
    name = message_class.DESCRIPTOR.name

    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            return Malformed(name, str(exc) or type(exc).__name__)

    return parse


# A method's shape (request streaming, response streaming): its behaviour's attribute on a
# method handler, and the function that makes such a handler.
HANDLER_KINDS = {(False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
                 (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
                 (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
                 (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler)}


def add_service(server, service_descriptor, servicer, pb_module) -> None:
    """Register `servicer`'s methods for `service_descriptor` with tolerant deserializers."""
    handlers = {}
    for method in service_descriptor.methods:
        request = getattr(pb_module, method.input_type.name)
        response = getattr(pb_module, method.output_type.name)
        _, make = HANDLER_KINDS[method.client_streaming, method.server_streaming]
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=tolerant(request),
                                     response_serializer=response.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers),))


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


def unary(method: str):
    """A unary handler of a front (its `metrics` attribute counts it): a malformed request or
    a RequestError becomes its status."""

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


class OrderedStreams:
    """Streams answered in request order. Up to STREAM_WINDOW requests are in flight; the
    answer function may wait (for queue room), so the reader stops and HTTP/2 flow control
    holds the client back. A bad request ends the stream with its status, naming it; so does
    shutting down (`drain`), after the requests already read are answered."""

    def __init__(self, metrics):
        self.metrics = metrics
        self._readers: set[asyncio.Task] = set()
        self._draining = False

    def drain(self) -> None:
        self._draining = True
        for reader in list(self._readers):
            reader.cancel()

    async def serve(self, request_iterator, context, method: str,
                    answer: Callable[[object], Awaitable], label: Callable[[object], str]):
        window: asyncio.Queue = asyncio.Queue(STREAM_WINDOW)
        reader = asyncio.ensure_future(self._read(request_iterator, window, method, answer,
                                                  label))
        self._readers.add(reader)
        try:
            while (entry := await window.get()) is not None:
                name, response = entry
                try:
                    yield await response
                except RequestError as error:
                    await context.abort(STATUS[error.kind], f"request {name}: {error}")
        finally:
            reader.cancel()
            self._readers.discard(reader)
            while not window.empty():
                if (entry := window.get_nowait()) is not None:
                    _discard(entry[1])

    async def _read(self, request_iterator, window, method, answer, label) -> None:
        """Feed `window` with (label, answer future) pairs, then None; never dies silently."""
        position = 0
        try:
            async for request in request_iterator:
                if isinstance(request, Malformed):
                    await window.put((f"#{position}", _failed(request.error())))
                    break
                await window.put((label(request) or f"#{position}", asyncio.ensure_future(
                    self._recorded(method, answer, request))))
                position += 1
        except asyncio.CancelledError:
            if self._draining:
                await window.put((f"#{position}", _failed(RequestError(
                    ErrorKind.UNAVAILABLE, "not read: the server is shutting down; send it "
                                           "and the rest again elsewhere"))))
        except Exception as exc:  # the client's side broke off; nothing is left to answer
            log.info("stream ended while reading: %s", exc)
        await window.put(None)

    async def _recorded(self, method, answer, request):
        with recorded(self.metrics, method):
            return await answer(request)


def _discard(answer: asyncio.Future) -> None:
    """An answer nobody will read: cancelled, or its failure marked as seen."""
    if answer.done() and not answer.cancelled():
        answer.exception()
    answer.cancel()


def _failed(error: RequestError) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(error)
    return future


def refusal(handler, code: grpc.StatusCode, message: str):
    """A handler of the same shape as `handler` that answers `code` with `message`."""

    async def deny(_request, context):
        await context.abort(code, message)

    async def deny_streaming(_request, context):
        await context.abort(code, message)
        yield  # an async generator, as a streaming handler must be

    _, make = HANDLER_KINDS[handler.request_streaming, handler.response_streaming]
    return make(deny_streaming if handler.response_streaming else deny,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def counted(handler, drain: Drain):
    """`handler`, its calls counted in `drain` from their start until they end (their status
    sent, or cancelled); a handler that is not a coroutine or an async generator, unchanged."""
    kind, _ = HANDLER_KINDS[handler.request_streaming, handler.response_streaming]
    behaviour = getattr(handler, kind)

    def begin(context) -> None:
        drain.began()
        context.add_done_callback(lambda _context: drain.ended())

    async def serve(request, context):
        begin(context)
        return await behaviour(request, context)

    async def serve_streaming(request, context):
        begin(context)
        async with contextlib.aclosing(behaviour(request, context)) as responses:
            async for response in responses:
                yield response

    if inspect.isasyncgenfunction(behaviour):
        return handler._replace(**{kind: serve_streaming})
    if inspect.iscoroutinefunction(behaviour):
        return handler._replace(**{kind: serve})
    return handler


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """The gRPC side of the drain (service/fronts/drain.py): once draining, every new RPC but
    health checks is answered UNAVAILABLE at once; until then, each is counted while served."""

    def __init__(self, drain: Drain):
        self.drain = drain

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHODS_PREFIX):
            return handler
        if self.drain.arrived():
            return counted(handler, self.drain)
        return refusal(handler, grpc.StatusCode.UNAVAILABLE, REFUSED)
