"""The HTTP front's server: OpenAI's and TEI's HTTP APIs (http_openai.py, http_tei.py) over the
core, on the event loop that serves gRPC.

uvicorn with its httptools parser (llhttp, the parser Node.js uses) runs the ASGI app in this
process's asyncio loop, next to grpc.aio: the same Embedder, scheduler, batches, limits,
health and metrics, and no second event loop or thread hop per request. Starlette routes;
orjson writes JSON (a float32 vector straight from numpy). Per request, this module owns what
every HTTP route shares: the API key, the body limit, JSON parsing, metrics, the drain, and
turning a RequestError into the route family's error shape (status.py holds the codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from embedrpc.service.core.embedder import Embedder
from embedrpc.service.core.health import Health
from embedrpc.service.core.metrics import Metrics
from embedrpc.service.errors import ErrorKind, RequestError
from embedrpc.service.fronts import status
from embedrpc.service.fronts.drain import REFUSED, Drain
from embedrpc.service.fronts.security import KEY_REQUIRED, ApiKeys, CertificateFiles

log = logging.getLogger("embedrpc.http")
JSON = "application/json"
RETRY_AFTER_S = "1"


class Family:
    """How a family of routes shapes its errors (OpenAI's or TEI's)."""

    def error(self, error: RequestError) -> Response:
        raise NotImplementedError


@dataclass(frozen=True)
class HttpSettings:
    body_limit: int  # bytes; more is 413
    # Model names the OpenAI routes answer to, the served name first, each with the task it
    # stands for (None: the default): aliases, and "<name>-<task>" per run-time task.
    model_names: dict[str, str | None]


Handler = Callable[[Request, "Exchange"], Awaitable[Response]]


class Exchange:
    """What a handler needs besides its request: the core, and the request's parsed body."""

    def __init__(self, front: "HttpFront", body: bytes):
        self.front, self._body = front, body
        self.embedder: Embedder = front.embedder

    def json(self):
        """The body as JSON, or INVALID_ARGUMENT (MALFORMED) naming what is wrong."""
        try:
            return orjson.loads(self._body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(ErrorKind.MALFORMED, f"the body is not JSON: {exc}") from None


def json_response(content, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code,
                    headers=headers, media_type=JSON)


class HttpFront:
    """The ASGI app and the uvicorn server that runs it in the current event loop."""

    def __init__(self, embedder: Embedder, metrics: Metrics, health: Health, drain: Drain,
                 api_keys: ApiKeys, settings: HttpSettings):
        self.embedder, self.metrics, self.health = embedder, metrics, health
        self.drain, self.api_keys, self.settings = drain, api_keys, settings
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task | None = None
        self.port: int | None = None

    def route(self, path: str, method: str, family: Family, handler: Handler,
              open_to_all: bool = False) -> Route:
        """A route whose requests are authenticated (unless `open_to_all`), bounded, drained,
        counted, and whose failures are `family`'s error shape."""
        label = f"{method} {path}"

        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            try:
                response = await self._serve(request, family, handler, open_to_all)
            except RequestError as error:
                response = family.error(error)
            except Exception:  # never a traceback to the client: logged, counted, INTERNAL
                log.exception("unexpected failure in %s", label)
                response = family.error(status.UNEXPECTED)
            self.metrics.requests.labels(label, str(response.status_code)).inc()
            self.metrics.request_seconds.labels(label).observe(time.monotonic() - started)
            return response

        return Route(path, endpoint, methods=[method])

    async def _serve(self, request: Request, family: Family, handler: Handler,
                     open_to_all: bool) -> Response:
        if not open_to_all:
            if self.api_keys.required and \
                    not self.api_keys.accepts(request.headers.get("authorization")):
                raise RequestError(ErrorKind.UNAUTHENTICATED, KEY_REQUIRED)
            if not self.drain.arrived():
                raise RequestError(ErrorKind.UNAVAILABLE, REFUSED)
        body = await _read_body(request, self.settings.body_limit) \
            if request.method == "POST" else b""
        return await handler(request, Exchange(self, body))

    def app(self, routes: list[Route], unrouted: Callable[[str], Family]) -> Starlette:
        """The ASGI app; `unrouted(path)` shapes the errors of paths no route takes."""
        async def not_found(request: Request, _exc) -> Response:
            return unrouted(request.url.path).error(RequestError(
                ErrorKind.NOT_FOUND, f"no route {request.method} {request.url.path}"))

        async def not_allowed(request: Request, _exc) -> Response:
            return unrouted(request.url.path).error(RequestError(
                ErrorKind.METHOD_NOT_ALLOWED,
                f"{request.url.path} does not take {request.method}"))

        return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})

    async def start(self, app: Starlette, host: str, port: int,
                    certificates: CertificateFiles | None, grace: float) -> int:
        """Listen on host:port (0: any free port); returns the port."""
        config = uvicorn.Config(app, host=host, port=port, http="httptools", lifespan="off",
                                access_log=False, log_level="warning", server_header=False,
                                date_header=False, timeout_graceful_shutdown=max(grace, 0.1))
        config.load()
        if certificates is not None:
            config.ssl = certificates.ssl_context()  # re-reads rotated files per handshake
        self._server = _InLoopServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():  # it could not listen: say why
                self._task.result()
                raise OSError(f"cannot listen on {host}:{port} (HTTP)")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening, let in-flight requests finish (up to the grace period)."""
        if self._server is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class _InLoopServer(uvicorn.Server):
    """uvicorn in a loop it does not own: the application handles SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as TOO_LARGE as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(ErrorKind.TOO_LARGE, f"the body has {declared} bytes, over this "
                                                f"server's limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(ErrorKind.TOO_LARGE, f"the body is over this server's limit of "
                                                    f"{limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def retry_headers(kind: ErrorKind) -> dict[str, str]:
    """Retry-After on the answers a client should retry (busy, restarting, draining)."""
    return {"Retry-After": RETRY_AFTER_S} if status.STATUS[kind].retry else {}
