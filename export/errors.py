"""Export's error: one line saying what to do."""

from __future__ import annotations

from embedrpc.service.errors import EmbedrpcError


class ExportError(EmbedrpcError):
    """A user-facing export failure; the message is one line saying what to do."""
