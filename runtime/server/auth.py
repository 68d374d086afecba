"""Who may use the server: API keys (``--api-key-file``), TLS files, CORS origins, the exposure warning.

* :class:`KeyFile` holds the keys of a file (one a line; blank lines and ``#`` comments ignored) as
  SHA-256 digests, and re-reads the file when it changes (checked at most every :data:`RECHECK_S`
  seconds, so a rotation needs no restart and no signal, in every worker process). A file that
  becomes unreadable or empty lets no key in (fail closed) until it is fixed.
* :class:`Gate` (one per server) decides: a request is let in when its ``Authorization: Bearer
  <key>`` names a current key; the presented key is hashed and compared with every key's digest
  by :func:`hmac.compare_digest` (fixed length, no early exit), and never logged. Each refusal is
  counted in ``visionrt_auth_failure_total{reason}`` (``missing``, ``malformed``, ``wrong``).
* :class:`ApiKeyAuth` (ASGI middleware) answers a refused HTTP request 401 ``{"error": ...}`` with
  ``WWW-Authenticate: Bearer`` (:meth:`Gate.refuse`, which the hot routes' fast path in
  :mod:`.hot_routes` calls itself), on every path but :data:`OPEN_PATHS` (health and the page; with
  ``--public-metrics`` also ``/metrics`` and ``/v2/models/{m}/stats``); :func:`grpc_interceptors`
  applies the same keys to the gRPC service (metadata ``authorization``; ``UNAUTHENTICATED``).
* :func:`check_access` validates the command line's key file, TLS files and origins before the
  models load (one-line :class:`InputError`), and logs the warning of a server reachable from the
  network without a key.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import ssl
import stat
import time
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from ..errors import InputError

log = logging.getLogger(__name__)

#: Paths anyone may request: the health probes, and the page (static HTML that asks for the key).
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/"})
#: Paths opened by ``--public-metrics``.
METRICS_PATHS = re.compile(r"/metrics|/v2/models/[^/]+(?:/versions/[^/]+)?/stats")
#: Seconds between checks of whether the key file changed.
RECHECK_S = 1.0
#: Shortest key accepted, in characters.
MIN_KEY_CHARS = 16
#: Largest key file read, in bytes.
MAX_FILE_BYTES = 2**20
FAILURE_REASONS = ("missing", "malformed", "wrong")
_KEY = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token: what a Bearer header can carry
_NEW_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def read_keys(path: str | os.PathLike) -> list[str]:
    """The keys of ``path`` in file order; :class:`InputError` (naming the line, never the key)
    unless it is a readable regular file holding at least one key, each a b64token of at least
    :data:`MIN_KEY_CHARS` characters."""
    path = Path(path)
    fix = f"write one key a line, e.g. the output of {_NEW_KEY}"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"the API key file {path} is not a regular file", fix=fix)
        if info.st_size > MAX_FILE_BYTES:
            raise InputError(f"the API key file {path} is larger than {MAX_FILE_BYTES // 1024} KiB", fix=fix)
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise InputError(f"cannot read the API key file {path}: {err.strerror or err}",
                         fix="pass --api-key-file a readable file") from None
    except UnicodeDecodeError:
        raise InputError(f"the API key file {path} is not UTF-8 text", fix=fix) from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if not _KEY.fullmatch(key):
            raise InputError(f"line {number} of the API key file {path} is not one key (letters, digits, "
                             "-._~+/ and trailing =, no spaces)", fix=fix)
        if len(key) < MIN_KEY_CHARS:
            raise InputError(f"the key on line {number} of {path} has {len(key)} characters, "
                             f"fewer than {MIN_KEY_CHARS}", fix=fix)
        keys.append(key)
    if not keys:
        raise InputError(f"the API key file {path} holds no key", fix=fix)
    return keys


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is rewritten or replaced; ``None`` when it cannot be seen."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


class KeyFile:
    """The current keys of a file, as digests; re-read when the file changes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._stamp = _stamp(self.path)
        self._digests = tuple(_digest(key.encode()) for key in read_keys(self.path))
        self._checked = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return
        self._checked = now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._digests = tuple(_digest(key.encode()) for key in read_keys(self.path))
        except InputError as err:
            self._digests = ()
            log.warning("%s: every request is refused until the file is fixed", err)
            return
        log.info("API key file %s re-read: %d key(s)", self.path, len(self._digests))

    def matches(self, key: bytes) -> bool:
        """Whether ``key`` is one of the file's keys, compared with all of them in constant time."""
        self._refresh()
        presented = _digest(key)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest)
        return found


_REFUSALS = {
    "missing": ("this server needs an API key", 'Bearer realm="visionrt"'),
    "malformed": ("the Authorization header is not 'Bearer <key>'", 'Bearer realm="visionrt", error="invalid_request"'),
    "wrong": ("the API key is not valid", 'Bearer realm="visionrt", error="invalid_token"'),
}
_FIX = "send the header 'Authorization: Bearer <key>' with a key of the server's --api-key-file"
#: gRPC methods anyone may call (the health probes), and those ``--public-metrics`` opens.
GRPC_OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})
GRPC_METRICS_METHODS = frozenset({"ModelStatistics"})


class Gate:
    """The keys and the refusal counter of one server, shared by its HTTP and gRPC endpoints."""

    def __init__(self, api_key_file: str | os.PathLike, registry, public_metrics: bool = False):
        from prometheus_client import Counter

        self.keys = KeyFile(api_key_file)
        self.public_metrics = public_metrics
        failures = Counter("visionrt_auth_failure", "Requests refused for want of a valid API key, by reason",
                           ["reason"], registry=registry)
        self._failures = {reason: failures.labels(reason) for reason in FAILURE_REASONS}

    def refusal(self, authorization: list[bytes]) -> str | None:
        """Why a request carrying these ``Authorization`` values is refused (counted), or ``None``."""
        reason = self._reason(authorization)
        if reason is not None:
            self._failures[reason].inc()
        return reason

    def _reason(self, authorization: list[bytes]) -> str | None:
        if not authorization:
            return "missing"
        scheme, _, token = authorization[0].strip().partition(b" ")
        token = token.strip()
        if len(authorization) > 1 or scheme.lower() != b"bearer" or not token:
            return "malformed"
        return None if self.keys.matches(token) else "wrong"

    def refuse(self, headers: list[tuple[bytes, bytes]]) -> JSONResponse | None:
        """The 401 answer to an HTTP request with these ASGI ``headers`` (the refusal counted), or
        ``None`` when its ``Authorization`` names a current key."""
        reason = self.refusal([value for name, value in headers if name == b"authorization"])
        if reason is None:
            return None
        return JSONResponse({"error": message(reason)}, status_code=401,
                            headers={"WWW-Authenticate": _REFUSALS[reason][1]})

    def open_path(self, path: str) -> bool:
        return path in OPEN_PATHS or (self.public_metrics and METRICS_PATHS.fullmatch(path) is not None)

    def open_method(self, method: str) -> bool:
        """Whether the gRPC method (``/package.Service/Name``) needs no key."""
        name = method.rsplit("/", 1)[-1]
        return name in GRPC_OPEN_METHODS or (self.public_metrics and name in GRPC_METRICS_METHODS)


def message(reason: str) -> str:
    """The one-line answer to a refusal: the cause and the fix."""
    return f"{_REFUSALS[reason][0]} ({_FIX})"


class ApiKeyAuth:
    """ASGI middleware: refuse every request but the open paths unless it names a current key."""

    def __init__(self, app, gate: Gate):
        self.app = app
        self.gate = gate

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.gate.open_path(scope["path"]):
            return await self.app(scope, receive, send)
        refusal = self.gate.refuse(scope["headers"])
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await refusal(scope, receive, send)


def grpc_interceptors(gate: Gate | None) -> list:
    """For ``grpc.aio.server(interceptors=...)``: the same keys as HTTP, from the call's metadata
    ``authorization: Bearer <key>``; a refusal ends the call ``UNAUTHENTICATED``."""
    if gate is None:
        return []
    import grpc

    kinds = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}

    class KeyCheck(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            if handler is None or gate.open_method(details.method):
                return handler
            values = [value.encode() if isinstance(value, str) else value
                      for key, value in details.invocation_metadata or () if key == "authorization"]
            reason = gate.refusal(values)
            if reason is None:
                return handler

            async def refuse(request, context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message(reason))

            return kinds[handler.request_streaming, handler.response_streaming](
                refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

    return [KeyCheck()]


def grpc_credentials(certfile: str | None, keyfile: str | None):
    """``grpc.ssl_server_credentials`` of the HTTP certificate and key (``keyfile`` None: ``certfile``
    holds both), so the gRPC port is TLS exactly when HTTP is; ``None`` without a certificate."""
    if certfile is None:
        return None
    import grpc

    chain = Path(certfile).read_bytes()
    return grpc.ssl_server_credentials([(Path(keyfile).read_bytes() if keyfile else chain, chain)])


def protect(app, gate: Gate | None, cors_origins: Iterable[str]) -> None:
    """Wrap ``app`` in the key check (with a ``gate``) and then CORS (with ``cors_origins``); call
    after adding every other middleware, so these run first (a CORS preflight needs no key)."""
    if gate is not None:
        app.add_middleware(ApiKeyAuth, gate=gate)
    origins = list(cors_origins)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Inference-Header-Content-Length"],
                           expose_headers=["Inference-Header-Content-Length", "Retry-After"])


def reachable_from_network(host: str) -> bool:
    """Whether a server bound to ``host`` takes connections from other machines (any address of
    ``host`` is not loopback; ``0.0.0.0`` and ``::`` are every address)."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return any(not ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, UnicodeError, ValueError):
        return True


def check_origin(origin: str) -> str:
    """``origin`` (``*`` or ``scheme://host[:port]``, what a browser sends in ``Origin``), else :class:`InputError`."""
    parts = urlsplit(origin)
    if origin != "*" and (parts.scheme not in ("http", "https") or not parts.hostname
                          or parts.path or parts.query or parts.fragment):
        raise InputError(f"--cors-origin {origin!r} is not an origin",
                         fix="pass scheme://host[:port] without a path, e.g. https://app.example.com")
    return origin


def _reason(err: Exception, unnamed: str) -> str:
    """What an ``OSError``/``ssl.SSLError`` says, or ``unnamed`` where OpenSSL names nothing."""
    if isinstance(err, ssl.SSLError):
        return err.reason or unnamed
    return err.strerror or str(err)


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """:class:`InputError` unless ``certfile`` holds a PEM certificate (chain) and ``keyfile`` its
    unencrypted private key (``keyfile`` may be left out when ``certfile`` holds both)."""
    if certfile is None:
        if keyfile is not None:
            raise InputError("--ssl-keyfile without --ssl-certfile", fix="pass the certificate with --ssl-certfile")
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_verify_locations(cafile=certfile)
    except (OSError, ssl.SSLError) as err:
        raise InputError(f"--ssl-certfile {certfile} is not a PEM certificate: {_reason(err, 'unreadable')}",
                         fix="pass the server's certificate (chain) in PEM") from None
    try:
        context.load_cert_chain(certfile, keyfile, password=lambda: b"")
    except (OSError, ssl.SSLError) as err:
        raise InputError(f"{'--ssl-keyfile ' + keyfile if keyfile else '--ssl-certfile ' + certfile} holds no "
                         f"unencrypted private key of the certificate: {_reason(err, 'no PEM key, or one with a passphrase')}",
                         fix="pass --ssl-keyfile the certificate's private key in PEM, without a passphrase") from None


def check_access(host: str, port: int, api_key_file: str | None, certfile: str | None, keyfile: str | None,
                 cors_origins: Iterable[str]) -> None:
    """Validate the serve command's access options (:class:`InputError`) and warn, in one log line,
    when the server will be reachable from the network without a key."""
    if api_key_file is not None:
        read_keys(api_key_file)
    check_tls(certfile, keyfile)
    for origin in cors_origins:
        check_origin(origin)
    if api_key_file is None and reachable_from_network(host):
        log.warning("serving on %s:%d without --api-key-file: anyone who can reach this port can use, time and "
                    "load the models and read their list and metrics", host, port)
