"""How each front reports an error: the one table from `ErrorKind` to every front's codes.

gRPC's status code; OpenAI's HTTP status, error type and code (the `{"error": {...}}` body of
the OpenAI API); text-embeddings-inference's HTTP status and `error_type` (TEI's router:
Empty 400, Validation and Tokenizer 422, Overloaded 429, Backend 424, Unhealthy 503); and
whether a client should retry (HTTP answers then carry Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from embedrpc.service.errors import ErrorKind, RequestError


@dataclass(frozen=True)
class Status:
    grpc: grpc.StatusCode
    openai_http: int
    openai_type: str
    openai_code: str | None
    tei_http: int
    tei_type: str
    retry: bool = False


_INVALID = "invalid_request_error"
STATUS = {
    ErrorKind.INVALID_ARGUMENT: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, _INVALID, None,
                                       422, "Validation"),
    ErrorKind.EMPTY: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, _INVALID, None, 400, "Empty"),
    ErrorKind.MALFORMED: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, _INVALID, None, 400,
                                "Validation"),
    ErrorKind.FAILED_PRECONDITION: Status(grpc.StatusCode.FAILED_PRECONDITION, 400, _INVALID,
                                          None, 424, "Backend"),
    ErrorKind.RESOURCE_EXHAUSTED: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "requests",
                                         "rate_limit_exceeded", 429, "Overloaded", retry=True),
    ErrorKind.UNAVAILABLE: Status(grpc.StatusCode.UNAVAILABLE, 503, "server_error",
                                  "service_unavailable", 503, "Unhealthy", retry=True),
    ErrorKind.INTERNAL: Status(grpc.StatusCode.INTERNAL, 500, "server_error", None, 424,
                               "Backend"),
    ErrorKind.UNAUTHENTICATED: Status(grpc.StatusCode.UNAUTHENTICATED, 401, _INVALID,
                                      "invalid_api_key", 401, "Unauthorized"),
    ErrorKind.NOT_FOUND: Status(grpc.StatusCode.NOT_FOUND, 404, _INVALID, "model_not_found",
                                404, "NotFound"),
    ErrorKind.METHOD_NOT_ALLOWED: Status(grpc.StatusCode.UNIMPLEMENTED, 405, _INVALID, None,
                                         405, "NotFound"),
    ErrorKind.TOO_LARGE: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 413, _INVALID,
                                "request_too_large", 413, "Validation"),
    ErrorKind.UNIMPLEMENTED: Status(grpc.StatusCode.UNIMPLEMENTED, 501, _INVALID,
                                    "not_implemented", 501, "Backend"),
}
GRPC_STATUS = {kind: row.grpc for kind, row in STATUS.items()}
UNEXPECTED = RequestError(ErrorKind.INTERNAL, "internal error; the server's log has the details")
