"""text-embeddings-inference's HTTP API, as TEI's router serves it for an embedding model.

`POST /embed` (and `POST /`, where TEI routes an embedding model's default task and where
huggingface_hub's InferenceClient posts): `inputs` a string, token ids, or a list of either;
`normalize` (default true), `truncate` (default true: TEI's auto-truncate), `truncation_direction`
(`right`/`left`), `prompt_name`, `dimensions`; answered with a list of vectors, always.
`POST /tokenize`, `POST /decode`, `GET /info`, `GET /health` (open to probes). `/embed_all`,
`/embed_sparse`, `/rerank`, `/predict` and `/similarity` answer 501 naming embedrpc's
alternative. Errors: `{"error", "error_type"}` with TEI's statuses (status.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from embedrpc.service import __version__
from embedrpc.service.bundle.tokenizer import Truncation
from embedrpc.service.core.embedder import EmbedOptions
from embedrpc.service.errors import ErrorKind, RequestError
from embedrpc.service.fronts import status
from embedrpc.service.fronts.http_server import (
    Exchange,
    Family,
    HttpFront,
    json_response,
    retry_headers,
)

DIRECTIONS = {"right": Truncation.RIGHT, "left": Truncation.LEFT}
UNHEALTHY = {"error": "unhealthy", "error_type": "Unhealthy"}
ALTERNATIVES = {
    "/embed_all": "per-token vectors are not served: use /embed (last-token pooling), or "
                  "/tokenize for the tokens",
    "/embed_sparse": "this is a dense embedding model: use /embed",
    "/predict": "this is an embedding model, not a classifier: use /embed",
    "/rerank": "this is an embedding model, not a reranker: embed the query (prompt_name "
               "'query') and the texts (prompt_name 'document') with /embed and rank by cosine "
               "similarity (the vectors are unit length: the dot product)",
    "/similarity": "embed the source sentence and the sentences with /embed and compare them "
                   "by cosine similarity (the vectors are unit length: the dot product)",
}


class TeiErrors(Family):
    def error(self, error: RequestError) -> Response:
        row = status.STATUS[error.kind]
        return json_response({"error": str(error), "error_type": row.tei_type}, row.tei_http,
                             retry_headers(error.kind))


ERRORS = TeiErrors()


def invalid(message: str, field: str) -> RequestError:
    return RequestError(ErrorKind.INVALID_ARGUMENT, message, field)


def routes(front: HttpFront) -> list:
    async def embed(_request: Request, exchange: Exchange) -> Response:
        body = _object(exchange)
        texts = await exchange.embedder.decode_inputs(_items(body.get("inputs"), "inputs"))
        embedded = await exchange.embedder.embed(texts, EmbedOptions(
            prompt_name=_optional_string(body, "prompt_name"), truncation=_truncation(body),
            dimensions=_optional_int(body, "dimensions"),
            normalize=_bool(body, "normalize", default=True)))
        return json_response(embedded.rows, headers={
            "x-compute-characters": str(sum(map(len, texts))),
            "x-compute-tokens": str(sum(embedded.token_counts)),
            "x-total-time": str(embedded.total_ns // 1_000_000),
            "x-tokenization-time": str(embedded.tokenize_ns // 1_000_000)})

    async def tokenize(_request: Request, exchange: Exchange) -> Response:
        body = _object(exchange)
        inputs = body.get("inputs")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise invalid("inputs must be a string or a list of strings", "inputs")
        if not texts:
            raise RequestError(ErrorKind.EMPTY, "inputs cannot be empty", "inputs")
        add_special = _bool(body, "add_special_tokens", default=True)
        prompt_name = _optional_string(body, "prompt_name")
        answers = []
        for text in texts:
            tokens = await exchange.embedder.describe_tokens(text, prompt_name, add_special)
            answers.append([{"id": t.id, "text": t.text, "special": t.special,
                             "start": t.start, "stop": t.stop} for t in tokens])
        return json_response(answers)

    async def decode(_request: Request, exchange: Exchange) -> Response:
        body = _object(exchange)
        ids = body.get("ids")
        batch = ids if isinstance(ids, list) and ids and all(isinstance(i, list) for i in ids) \
            else [ids]
        for one in batch:
            if not isinstance(one, list) or not all(_is_id(i) for i in one):
                raise invalid("ids must be a list of token ids or a list of such lists", "ids")
            if not one:
                raise RequestError(ErrorKind.EMPTY, "ids cannot be empty", "ids")
        skip = _bool(body, "skip_special_tokens", default=True)
        return json_response([await exchange.embedder.decode(one, skip) for one in batch])

    async def info(_request: Request, exchange: Exchange) -> Response:
        model = exchange.embedder.info()
        return json_response({
            "model_id": model.model, "model_sha": model.revision or None,
            "model_dtype": model.precision,
            "served_model_name": next(iter(front.settings.model_names)),
            "model_type": {"embedding": {"pooling": "last_token"}},
            "max_concurrent_requests": model.max_queue,
            "max_input_length": model.max_input_tokens,
            "max_batch_tokens": model.max_batch_tokens, "max_batch_requests": None,
            "max_client_batch_size": model.max_queue, "auto_truncate": True,
            "tokenization_workers": 2, "version": __version__, "sha": None,
            "docker_label": None})

    async def health(_request: Request, _exchange: Exchange) -> Response:
        if front.health.serving and not front.drain.draining:
            return Response(status_code=200)
        return json_response(UNHEALTHY, status.STATUS[ErrorKind.UNAVAILABLE].tei_http)

    def unimplemented(path: str):
        async def refuse(_request: Request, _exchange: Exchange) -> Response:
            raise RequestError(ErrorKind.UNIMPLEMENTED, f"{path} is not served by embedrpc: "
                                                        f"{ALTERNATIVES[path]}")
        return refuse

    return [front.route("/embed", "POST", ERRORS, embed),
            front.route("/", "POST", ERRORS, embed),
            front.route("/tokenize", "POST", ERRORS, tokenize),
            front.route("/decode", "POST", ERRORS, decode),
            front.route("/info", "GET", ERRORS, info),
            front.route("/health", "GET", ERRORS, health, open_to_all=True),
            front.route("/", "GET", ERRORS, health, open_to_all=True),
            *(front.route(path, "POST", ERRORS, unimplemented(path)) for path in ALTERNATIVES)]


def _object(exchange: Exchange) -> dict:
    body = exchange.json()
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object", "body")
    return body


def _items(value, field: str) -> list[str | list[int]]:
    """TEI's inputs: a text, token ids, or a list mixing both."""
    if isinstance(value, str) or (isinstance(value, list) and value
                                  and all(_is_id(item) for item in value)):
        value = [value]
    if not isinstance(value, list):
        raise invalid(f"{field} must be a string, token ids, or a list of them", field)
    if not value:
        raise RequestError(ErrorKind.EMPTY, f"{field} cannot be empty", field)
    for index, item in enumerate(value):
        if not (isinstance(item, str) or (isinstance(item, list)
                                          and all(_is_id(i) for i in item))):
            raise invalid(f"{field}[{index}] must be a string or a list of token ids", field)
    return value


def _truncation(body: dict) -> Truncation:
    truncate = body.get("truncate")
    if truncate is None:
        truncate = True  # TEI's auto-truncate
    if not isinstance(truncate, bool):
        raise invalid(f"truncate must be true, false or null, not {truncate!r}", "truncate")
    direction = body.get("truncation_direction") or "right"
    if not isinstance(direction, str) or direction.lower() not in DIRECTIONS:
        raise invalid(f"truncation_direction must be 'Right' or 'Left', not {direction!r}",
                      "truncation_direction")
    return DIRECTIONS[direction.lower()] if truncate else Truncation.NONE


def _bool(body: dict, field: str, default: bool) -> bool:
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise invalid(f"{field} must be true or false, not {value!r}", field)
    return value


def _optional_string(body: dict, field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{field} must be a string or null, not {value!r}", field)
    return value


def _optional_int(body: dict, field: str) -> int | None:
    value = body.get(field)
    if value is not None and not _is_id(value):
        raise invalid(f"{field} must be an integer or null, not {value!r}", field)
    return value


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
