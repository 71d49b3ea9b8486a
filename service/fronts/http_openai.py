"""OpenAI's embeddings API: `POST /v1/embeddings` (and `/embeddings`), `GET /v1/models`.

Request: `model` (the served name or an alias), `input` (a string, strings, one token-id list
or token-id lists: ids of the bare text in this model's vocabulary, embedded as the text they
decode to, so ids and text give the same vector), `encoding_format` (`float`, or `base64`:
little-endian float32, which the OpenAI SDKs ask for by default), `dimensions` (a Matryoshka
size, re-normalised), `user` (ignored). OpenAI has no field for the task, so the conventions
that exist are read: `input_type` (Cohere, NIM, Voyage: `query`, `document`, `passage`,
`search_query`, `search_document`) and `task` (Jina's: `retrieval.query`,
`retrieval.passage`, or a prompt name); unset, the model's default prompt. Extensions:
`truncate` / `truncation_direction` (OpenAI refuses too long an input; so does this unless
asked). Errors: `{"error": {"message", "type", "param", "code"}}` with OpenAI's statuses.
"""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response

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

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
FLOAT, BASE64 = "float", "base64"
# The prompt a task convention names.
INPUT_TYPES = {"query": "query", "search_query": "query", "document": "document",
               "passage": "document", "search_document": "document"}
# Jina's `task`: a model task, or "<task>.<side>" naming the prompt too.
SIDES = {"query": "query", "passage": "document", "document": "document"}
UNKNOWN_TASK_ALIAS = "retrieval"
TRUNCATION_DIRECTIONS = {"right": Truncation.RIGHT, "left": Truncation.LEFT}
# The core's names of a request's parts, as this API names them.
PARAMS = {"inputs": "input", "dimensions": "dimensions", "prompt_name": "input_type",
          "encoding": "encoding_format", "truncation": "truncation_direction"}


class OpenAiErrors(Family):
    def error(self, error: RequestError) -> Response:
        row = status.STATUS[error.kind]
        body = {"error": {"message": str(error), "type": row.openai_type,
                          "param": PARAMS.get(error.field, error.field),
                          "code": row.openai_code}}
        return json_response(body, row.openai_http, retry_headers(error.kind))


ERRORS = OpenAiErrors()


def invalid(message: str, param: str | None) -> RequestError:
    return RequestError(ErrorKind.INVALID_ARGUMENT, message, param)


def routes(front: HttpFront) -> list:
    names = front.settings.model_names

    async def embeddings(_request: Request, exchange: Exchange) -> Response:
        body = exchange.json()
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object", None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid("you must provide a model parameter (a string)", "model")
        if model not in names:
            raise RequestError(ErrorKind.NOT_FOUND,
                               f"The model `{model}` does not exist: this server serves "
                               f"{', '.join(repr(n) for n in names)}", "model")
        manifest = exchange.embedder.manifest
        encoding = body.get("encoding_format", FLOAT)
        if encoding not in (FLOAT, BASE64):
            raise invalid(f"encoding_format must be 'float' or 'base64', not {encoding!r}",
                          "encoding_format")
        options = _options(body, manifest.prompts,
                           [*manifest.tasks, *filter(None, [manifest.source.task])],
                           names[model])
        texts = await exchange.embedder.decode_inputs(_inputs(body.get("input")))
        embedded = await exchange.embedder.embed(texts, options)
        tokens = sum(embedded.token_counts)
        rows = embedded.rows.astype("<f4", copy=False)
        data = [{"object": "embedding", "index": index,
                 "embedding": base64.b64encode(row.tobytes()).decode() if encoding == BASE64
                 else row}
                for index, row in enumerate(rows)]
        return json_response({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def models(_request: Request, _exchange: Exchange) -> Response:
        return json_response({"object": "list", "data": [_model(name) for name in names]})

    async def model(request: Request, _exchange: Exchange) -> Response:
        name = request.path_params["name"]
        if name not in names:
            raise RequestError(ErrorKind.NOT_FOUND, f"The model `{name}` does not exist",
                               "model")
        return json_response(_model(name))

    return [front.route("/v1/embeddings", "POST", ERRORS, embeddings),
            front.route("/embeddings", "POST", ERRORS, embeddings),
            front.route("/v1/models", "GET", ERRORS, models),
            front.route("/v1/models/{name:path}", "GET", ERRORS, model)]


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "embedrpc"}


def _options(body: dict, prompts: dict[str, str], tasks: list[str],
             model_task: str | None) -> EmbedOptions:
    """`model_task`: the task the requested model name stands for (None: the default)."""
    prompt = None
    value = body.get("input_type")
    if value is not None:
        if not isinstance(value, str) or value not in INPUT_TYPES:
            raise invalid(f"input_type must be one of {', '.join(INPUT_TYPES)}, not {value!r}",
                          "input_type")
        prompt = INPUT_TYPES[value]
    task = model_task
    value = body.get("task")
    if value is not None:
        named_task, named_prompt = _task(value, prompts, tasks)
        if prompt is not None and named_prompt is not None and named_prompt != prompt:
            raise invalid(f"input_type and task disagree ({prompt!r} and {named_prompt!r})",
                          "task")
        if task is not None and named_task is not None and named_task != task:
            raise invalid(f"the model names task {task!r}, the task field {named_task!r}",
                          "task")
        prompt, task = prompt or named_prompt, task or named_task
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int)
                                   or isinstance(dimensions, bool)):
        raise invalid(f"dimensions must be an integer, not {dimensions!r}", "dimensions")
    return EmbedOptions(prompt_name=prompt, truncation=_truncation(body), dimensions=dimensions,
                        task=task)


def _task(value, prompts: dict[str, str], tasks: list[str]) -> tuple[str | None, str | None]:
    """(model task, prompt name) that a `task` field names: a prompt ("query"), a task
    ("text-matching"), or both, as Jina writes them ("retrieval.query", "retrieval.passage").
    A bundle that does not know its task takes "retrieval.<side>" for the prompt alone (the
    served model is a retrieval one unless its manifest says otherwise)."""
    named = tasks or [UNKNOWN_TASK_ALIAS]
    known = [*prompts, *tasks, *(f"{t}.{s}" for t in named for s in SIDES)]
    if isinstance(value, str):
        if value in prompts:
            return None, value
        if value in tasks:
            return value, None
        task, _, side = value.rpartition(".")
        if task in named and side in SIDES:
            return (task if tasks else None), SIDES[side]
    raise invalid(f"task must be one of {', '.join(known)}, not {value!r}", "task")


def _truncation(body: dict) -> Truncation:
    truncate = body.get("truncate", False)
    if not isinstance(truncate, bool):
        raise invalid(f"truncate must be true or false, not {truncate!r}", "truncate")
    direction = body.get("truncation_direction", "right")
    if not isinstance(direction, str) or direction.lower() not in TRUNCATION_DIRECTIONS:
        raise invalid(f"truncation_direction must be 'right' or 'left', not {direction!r}",
                      "truncation_direction")
    return TRUNCATION_DIRECTIONS[direction.lower()] if truncate else Truncation.NONE


def _inputs(value) -> list[str] | list[list[int]]:
    """Texts, or token-id lists, as OpenAI accepts `input`."""
    if isinstance(value, str):
        if not value:
            raise RequestError(ErrorKind.EMPTY, "input is an empty string", "input")
        return [value]
    if not isinstance(value, list):
        raise invalid("input must be a string, an array of strings, an array of token ids or "
                      "an array of token-id arrays", "input")
    if not value:
        raise RequestError(ErrorKind.EMPTY, "input is an empty array", "input")
    if len(value) > MAX_INPUTS:
        raise invalid(f"input has {len(value)} items, over the limit of {MAX_INPUTS}", "input")
    if all(isinstance(item, str) for item in value):
        return value
    if all(_is_id(item) for item in value):
        return [value]
    if all(isinstance(item, list) for item in value):
        for index, ids in enumerate(value):
            if not ids:
                raise RequestError(ErrorKind.EMPTY, f"input {index} is an empty array", "input")
            if not all(_is_id(item) for item in ids):
                raise invalid(f"input {index} must be an array of token ids (integers)",
                              "input")
        return value
    raise invalid("input must be a string, an array of strings, an array of token ids or an "
                  "array of token-id arrays, not a mix", "input")


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
