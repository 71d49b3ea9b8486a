"""Who may talk to the server: TLS (and mTLS) with certificates re-read when they change, and
API keys checked in constant time. Transport concerns: the core never sees them.

Certificate rotation works as cert-manager does it: the files are replaced in place, and the
next handshake uses them (gRPC asks `CertificateFiles.fetch` before each one). Key files are
re-read when they change (checked at most once a second) or on SIGHUP.
"""

from __future__ import annotations

import hmac
import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Callable

import grpc

from embedrpc.service.errors import EmbedrpcError
from embedrpc.service.fronts.grpc_wire import OPEN_METHODS_PREFIX, refusal

log = logging.getLogger("embedrpc.security")
KEY_RECHECK_S = 1.0
KEY_REQUIRED = "a valid API key is required: send the metadata 'authorization: Bearer <key>'"


class SecurityError(EmbedrpcError):
    """A certificate or key file that cannot be used."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _stamp(paths: list[str]) -> tuple:
    """What says a file changed: its inode, size and modification time."""
    stamps = []
    for path in paths:
        try:
            stat = os.stat(path)
            stamps.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class CertificateFiles:
    """The server's certificate, key and (for mTLS) client CA, re-read when they change."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None):
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamp = _stamp(self._paths())
        self.initial = self._load()

    def _paths(self) -> list[str]:
        return [self.cert, self.key, *([self.client_ca] if self.client_ca else [])]

    def _load(self):
        pair = (_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
        ca = _read(self.client_ca, "client CA") if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self):
        """gRPC's hook before a handshake: a new configuration, or None to keep the current."""
        stamp = _stamp(self._paths())
        if stamp == self._stamp:
            return None
        try:
            configuration = self._load()
        except SecurityError as exc:  # half-written during a rotation: keep serving the old
            log.warning("TLS files changed but cannot be used yet: %s", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificate files changed: new handshakes use them")
        return configuration

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=bool(self.client_ca))

    def ssl_context(self) -> ssl.SSLContext:
        """The HTTP front's TLS: every handshake uses a context made from the files as they
        are now (a changed file is read again; a half-written one keeps the previous)."""
        self._http = (_stamp(self._paths()), self._ssl_context())
        context = _RotatingContext(ssl.PROTOCOL_TLS_SERVER)
        context.current = self._current_ssl_context
        return context

    def _current_ssl_context(self) -> ssl.SSLContext:
        stamp, context = self._http
        if _stamp(self._paths()) != stamp:
            try:
                self._http = (_stamp(self._paths()), self._ssl_context())
                log.info("TLS certificate files changed: new HTTP handshakes use them")
            except (SecurityError, ssl.SSLError, OSError) as exc:
                log.warning("TLS files changed but cannot be used yet: %s", exc)
        return self._http[1]

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.client_ca:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(self.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise SecurityError(f"cannot use the TLS files {self.cert}, {self.key}: {exc}") \
                from exc
        return context


class _RotatingContext(ssl.SSLContext):
    """Hands each new TLS connection an SSL object of the current context (asyncio makes
    every server-side connection's SSL object through `wrap_bio`)."""

    current: Callable[[], ssl.SSLContext]

    def wrap_bio(self, *args, **kwargs):
        return self.current().wrap_bio(*args, **kwargs)


class ApiKeys:
    """Accepted keys: one per line of the key file (blank lines and `#` comments ignored) and
    the EMBEDRPC_API_KEY variable. No key configured means no key is asked for."""

    def __init__(self, key_file: str | None = None, env_key: str | None = None):
        self.key_file, self._env_key = key_file, env_key
        self._lock = threading.Lock()
        self._keys: tuple[bytes, ...] = ()
        self._stamp = None
        self._checked = 0.0
        self.reload()
        if not self.required and key_file:
            raise SecurityError(f"the API key file {key_file} holds no key")

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def reload(self) -> None:
        keys = [self._env_key] if self._env_key else []
        if self.key_file:
            text = _read(self.key_file, "API key file").decode("utf-8", "replace")
            keys += [line.strip() for line in text.splitlines()
                     if line.strip() and not line.strip().startswith("#")]
        with self._lock:
            self._keys = tuple(key.encode() for key in keys)
            self._stamp = _stamp([self.key_file]) if self.key_file else None
        log.info("API keys: %d accepted", len(keys))

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self.key_file or now - self._checked < KEY_RECHECK_S:
            return
        self._checked = now
        if _stamp([self.key_file]) != self._stamp:
            try:
                self.reload()
            except SecurityError as exc:  # mid-rotation: keep the keys we have
                log.warning("%s; keeping the previous keys", exc)

    def accepts(self, authorization: str | None) -> bool:
        """Whether `authorization` is `Bearer <an accepted key>`; every key is compared in
        constant time, so the answer's timing says nothing about the keys."""
        self._maybe_reload()
        scheme, _, presented = (authorization or "").partition(" ")
        candidate = presented.strip().encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched and scheme.lower() == "bearer"


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for every RPC without a valid key, except the standard health service."""

    def __init__(self, keys: ApiKeys):
        self.keys = keys

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHODS_PREFIX):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if self.keys.accepts(metadata.get("authorization")):
            return handler
        return refusal(handler, grpc.StatusCode.UNAUTHENTICATED, KEY_REQUIRED)
