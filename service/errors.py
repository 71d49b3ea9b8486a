"""embedrpc's errors, beneath every room of service/: one base for every failure that is
reported as one line, and one request error whose kind each front maps to its own status codes
(the table in service/fronts/status.py)."""

from __future__ import annotations

import enum


class EmbedrpcError(Exception):
    """A failure that the command line reports as `embedrpc: error: <message>`."""


class ErrorKind(enum.Enum):
    """What went wrong with a request, as a client should react to it."""

    INVALID_ARGUMENT = "the request is wrong: fix it"
    FAILED_PRECONDITION = "the server cannot do this for this bundle"
    RESOURCE_EXHAUSTED = "the server is busy: retry later"
    UNAVAILABLE = "the server is going away or restarting its runtime: retry"
    INTERNAL = "the server failed"


class RequestError(EmbedrpcError):
    """A request that cannot be answered; `kind` says how, the message what to do."""

    def __init__(self, kind: ErrorKind, message: str):
        super().__init__(message)
        self.kind = kind


def invalid(message: str) -> RequestError:
    return RequestError(ErrorKind.INVALID_ARGUMENT, message)
