"""How each front reports a core error: the one table from `ErrorKind` to status codes."""

from __future__ import annotations

import grpc

from embedrpc.service.errors import ErrorKind, RequestError

GRPC_STATUS = {ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
               ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
               ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
               ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
               ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL}
UNEXPECTED = RequestError(ErrorKind.INTERNAL, "internal error; the server's log has the details")
