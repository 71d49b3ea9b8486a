"""embedrpc's errors, beneath every room of service/: one base for every failure that is
reported as one line, and one request error whose kind each front maps to its own status codes
(the table in service/fronts/status.py)."""

from __future__ import annotations

import enum


class EmbedrpcError(Exception):
    """A failure that the command line reports as `embedrpc: error: <message>`."""


class ErrorKind(enum.Enum):
    """What went wrong with a request, as a client should react to it. Each front maps every
    kind to its own status codes in one table (service/fronts/status.py)."""

    INVALID_ARGUMENT = "the request is wrong: fix it"
    EMPTY = "the request holds nothing to embed: send text"
    MALFORMED = "the request does not parse"
    FAILED_PRECONDITION = "the server cannot do this for this bundle"
    RESOURCE_EXHAUSTED = "the server is busy: retry later"
    UNAVAILABLE = "the server is going away or restarting its runtime: retry"
    INTERNAL = "the server failed"
    UNAUTHENTICATED = "no valid API key was sent"
    NOT_FOUND = "no such model or route"
    METHOD_NOT_ALLOWED = "the route does not take this method"
    TOO_LARGE = "the request is over the server's size limit"
    UNIMPLEMENTED = "this server does not do that: the message names what it does instead"


class RequestError(EmbedrpcError):
    """A request that cannot be answered; `kind` says how, the message what to do, and
    `field` which part of the request it concerns, in the core's names (`inputs`,
    `dimensions`, `prompt_name`, `encoding`, `truncation`, ...; a front may rename them)."""

    def __init__(self, kind: ErrorKind, message: str, field: str | None = None):
        super().__init__(message)
        self.kind, self.field = kind, field


def invalid(message: str, field: str | None = None) -> RequestError:
    return RequestError(ErrorKind.INVALID_ARGUMENT, message, field)
