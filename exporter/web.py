"""The HTTP side: /metrics (or --web.telemetry-path), the status page, /probe, health/readiness,
POST /-/reload, and the optional Prometheus web-config file (TLS and basic auth). The server
itself is exporter.httpserver; the status page is exporter.statuspage, /probe exporter.probe."""

from __future__ import annotations

import base64
import enum
import gzip
import hashlib
import html
import itertools
import logging
import os
import re
import secrets
import ssl
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import yaml
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from exporter import __version__

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

LANDING = """<!doctype html>
<html><head><title>domainwatch</title></head>
<body>
<h1>domainwatch {version}</h1>
<p>Prometheus exporter for domain registration, delegation and contact health.</p>
<ul>
<li><a href="{telemetry}">{telemetry_path}</a>: last known results of the background checks</li>
<li><a href="-/healthy">/-/healthy</a>, <a href="-/ready">/-/ready</a></li>
<li><code>POST /-/reload</code>: re-read the configuration file</li>
</ul>
</body></html>
"""


class WebConfigError(ValueError):
    """A --web.config.file problem: one line naming the file, the key and what is wrong."""


# exporter-toolkit's client_auth_type values -> what Python's ssl module can enforce. Go's
# RequireAnyClientCert (a certificate is required but not verified) has no equivalent here and
# is refused rather than silently weakened.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Modular crypt format of bcrypt: $2a$ / $2b$ / $2x$ / $2y$, two-digit cost, 22 salt + 31 hash.
_BCRYPT = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")


@dataclass(frozen=True)
class WebConfig:
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    basic_auth_users: dict[str, str] = field(default_factory=dict)  # user -> bcrypt hash


def load_web_config(path: str) -> WebConfig:
    """Read the Prometheus exporter-toolkit web config (tls_server_config, basic_auth_users).

    Everything is checked here, at start-up, so that a bad file is one error line and not an
    HTTP 500 on every request later: each password hash must be bcrypt, and the TLS files must
    load (see tls_context).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"{path}: cannot read: {_reason(exc)}") from exc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise WebConfigError(f"{path}: invalid YAML: {_one_line(exc)}") from exc
    if not isinstance(doc, dict):
        raise WebConfigError(f"{path}: must be a mapping")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise WebConfigError(f"{path}: unknown keys {sorted(map(str, unknown))}")
    tls = doc.get("tls_server_config") or {}
    users = doc.get("basic_auth_users") or {}
    if not isinstance(tls, dict) or not isinstance(users, dict):
        raise WebConfigError(f"{path}: tls_server_config and basic_auth_users must be mappings")
    for key in ("cert_file", "key_file", "client_ca_file", "client_auth_type"):
        if tls.get(key) is not None and not isinstance(tls[key], str):
            raise WebConfigError(f"{path}: tls_server_config.{key} must be a string")
    if bool(tls.get("cert_file")) != bool(tls.get("key_file")):
        raise WebConfigError(f"{path}: tls_server_config needs both cert_file and key_file")
    auth_type = tls.get("client_auth_type") or "NoClientCert"
    if auth_type not in CLIENT_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type {auth_type!r} is not supported"
            f" (one of {', '.join(CLIENT_AUTH)})"
        )
    if CLIENT_AUTH[auth_type] != ssl.CERT_NONE and not tls.get("client_ca_file"):
        raise WebConfigError(f"{path}: client_auth_type {auth_type} needs client_ca_file")
    hashes: dict[str, str] = {}
    for user, hashed in users.items():
        name = str(user)
        if ":" in name or not name:
            raise WebConfigError(f"{path}: basic_auth_users: user {name!r} is not a valid name")
        # Never echo the value: it may be a plain-text password put there by mistake.
        if not isinstance(hashed, str) or not _valid_bcrypt(hashed):
            raise WebConfigError(
                f"{path}: basic_auth_users.{name}: not a bcrypt hash"
                " (expected $2b$<cost>$ and 53 characters, e.g. from htpasswd -nBC 10)"
            )
        hashes[name] = hashed
    # As in exporter-toolkit, relative file names are relative to the web config file.
    folder = os.path.dirname(path)

    def file(key: str) -> str | None:
        name = tls.get(key)
        return os.path.join(folder, name) if name else None

    config = WebConfig(
        cert_file=file("cert_file"),
        key_file=file("key_file"),
        client_ca_file=file("client_ca_file"),
        client_auth_type=auth_type,
        basic_auth_users=hashes,
    )
    tls_context(config, path)  # fail now, not on the first connection
    return config


def _valid_bcrypt(hashed: str) -> bool:
    match = _BCRYPT.fullmatch(hashed)
    return match is not None and 4 <= int(match.group(1)) <= 31


def tls_context(config: WebConfig, source: str = "web config") -> ssl.SSLContext | None:
    """The server-side TLS context, or None without TLS. Raises WebConfigError naming the file."""
    if not (config.cert_file and config.key_file):
        return None
    for key, file in (
        ("cert_file", config.cert_file),
        ("key_file", config.key_file),
        ("client_ca_file", config.client_ca_file),
    ):
        if file:
            try:
                with open(file, "rb"):
                    pass
            except OSError as exc:
                raise WebConfigError(
                    f"{source}: tls_server_config.{key} {file}: cannot read: {_reason(exc)}"
                ) from exc
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(config.cert_file, config.key_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise WebConfigError(
            f"{source}: tls_server_config: cannot load cert_file {config.cert_file} with key_file"
            f" {config.key_file}: {_one_line(exc)}"
        ) from exc
    if config.client_ca_file:
        try:
            ctx.load_verify_locations(config.client_ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise WebConfigError(
                f"{source}: tls_server_config.client_ca_file {config.client_ca_file}:"
                f" {_one_line(exc)}"
            ) from exc
    ctx.verify_mode = CLIENT_AUTH[config.client_auth_type]
    return ctx


class Verdict(enum.Enum):
    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"  # every bcrypt slot taken: answered 503 at once, checked nothing


class BasicAuth:
    """HTTP basic auth against bcrypt hashes, without telling who exists.

    An unknown user is checked against a dummy hash of the users' cost, so it takes as long as
    a known user with a wrong password (bcrypt's cost is nearly all of the time). Successful
    checks are remembered (SHA-256 of user, password and hash; at most 64) as exporter-toolkit
    does: Prometheus sends the same credentials every scrape, and a cost-12 bcrypt is ~250 ms of
    CPU each time. Failures are never cached, so guessing stays slow.

    At most BCRYPT_SLOTS checks run at once and a request that finds them all taken is BUSY
    without waiting: a flood of wrong passwords then costs BCRYPT_SLOTS cores, and never holds
    the web workers that answer scrapes (whose remembered credentials need no bcrypt).
    """

    CACHE_SIZE = 64
    BCRYPT_SLOTS = 2

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        costs = Counter(int(h[4:6]) for h in self._users.values())
        # The most common cost (the highest on a tie): that of a typical known user.
        cost = max(costs, key=lambda c: (costs[c], c)) if costs else 10
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.BCRYPT_SLOTS)

    def check(self, header: str) -> Verdict:
        if not header.startswith("Basic "):
            return Verdict.DENIED
        try:
            decoded = base64.b64decode(header[6:], validate=True)
        except ValueError:  # binascii.Error included
            return Verdict.DENIED
        user_bytes, _, password = decoded.partition(b":")
        user = user_bytes.decode("utf-8", "replace")
        stored = self._users.get(user)
        hashed = stored if stored is not None else self._dummy
        key = hashlib.sha256(b"\0".join((user_bytes, password, hashed))).digest()
        with self._lock:
            if stored is not None and key in self._good:
                self._good.move_to_end(key)
                return Verdict.OK
        if not self._slots.acquire(blocking=False):
            return Verdict.BUSY
        try:
            ok = bool(bcrypt.checkpw(password, hashed))
        except ValueError:  # NUL bytes, or longer than bcrypt's 72 bytes
            ok = False
        finally:
            self._slots.release()
        if not ok or stored is None:
            return Verdict.DENIED
        with self._lock:
            self._good[key] = None
            if len(self._good) > self.CACHE_SIZE:
                self._good.popitem(last=False)
        return Verdict.OK


# Which methods each path answers; anything else on a known path is 405 with an Allow header.
READ = ("GET", "HEAD")
ROUTES: dict[str, tuple[str, ...]] = {
    "/": READ,
    "/metrics": READ,
    "/-/healthy": READ,
    "/-/ready": READ,
    "/-/reload": ("POST",),
}
PROBE_PATH = "/probe"
API_PREFIX = "/api/v1/domains"  # and /api/v1/domains/NAME
_TELEMETRY_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*")


def check_telemetry_path(path: str) -> str:
    """--web.telemetry-path: an absolute URL path that no other endpoint uses."""
    if not _TELEMETRY_PATH.fullmatch(path) or "//" in path:
        raise ValueError(f"{path!r} is not an absolute URL path such as /metrics")
    taken = {p for p in ROUTES if p != "/metrics"} | {PROBE_PATH}
    if path in taken or path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        raise ValueError(f"{path!r} is already used by another endpoint")
    return path


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """process_* (CPU, memory, open files, start time), python_info and python_gc_* on the
    exporter's own registry, as every Prometheus exporter serves them."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def make_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    reload: Callable[[], str | None],
    users: dict[str, str] | None = None,
    domain_exposition: Callable[[], bytes] | None = None,
    domain_chunks: Callable[..., list[bytes]] | None = None,
    *,
    domain_stream: Callable[..., tuple[int, Iterator[bytes]]] | None = None,
    telemetry_path: str = "/metrics",
    pages: WsgiApp | None = None,
    probe: WsgiApp | None = None,
) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """`registry` holds the exporter's own metrics; the per-domain families are appended to
    them, from `domain_stream` (DomainCollector.exposition_stream: its length and chunks,
    streamed by the server), `domain_chunks` (DomainCollector.exposition_chunks: cached chunks,
    cached gzip members when the client takes gzip) or else `domain_exposition`. They are served on
    `telemetry_path`. `pages` (exporter.statuspage) answers `/` and /api/v1/domains[/NAME],
    else `/` is a plain landing page; `probe` (exporter.probe) answers /probe. HEAD is
    answered like GET; the server leaves out the body."""
    auth = BasicAuth(users) if users else None
    routes = dict(ROUTES)
    del routes["/metrics"]
    routes[telemetry_path] = READ
    if probe is not None:
        routes[PROBE_PATH] = READ

    def metrics_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        gzipped = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        body = generate_latest(registry)
        headers = [("Content-Type", CONTENT_TYPE_LATEST)]
        if domain_stream is not None:
            # DomainCollector.exposition_stream: cached gzip members as they are, or the plain
            # text decompressed cell by cell while the server sends it (never all at once).
            if gzipped:
                body = gzip.compress(body, compresslevel=1)
                headers.append(("Content-Encoding", "gzip"))
            length, rest = domain_stream(gzipped=gzipped)
            headers.append(("Content-Length", str(len(body) + length)))
            start_response("200 OK", headers)
            return itertools.chain((body,), rest)
        if domain_chunks is not None:
            # A gzip stream may be several members (RFC 1952 2.2): ours, then the cached ones,
            # sent as they are (never joined: at 100k domains that is hundreds of MB).
            if gzipped:
                body = gzip.compress(body, compresslevel=1)
            chunks = [body, *domain_chunks(gzipped=gzipped)]
            if gzipped:
                headers.append(("Content-Encoding", "gzip"))
            headers.append(("Content-Length", str(sum(len(c) for c in chunks))))
            start_response("200 OK", headers)
            return chunks
        else:
            if domain_exposition is not None:
                body += domain_exposition()
            if gzipped:
                # Level 1: the text compresses ~15x anyway and the scrape stays fast.
                body = gzip.compress(body, compresslevel=1)
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        verdict = auth.check(environ.get("HTTP_AUTHORIZATION", "")) if auth else Verdict.OK
        if verdict is Verdict.BUSY:
            start_response(
                "503 Service Unavailable",
                [("Retry-After", "1"), ("Content-Type", "text/plain; charset=utf-8")],
            )
            return [b"Too many authentication attempts at once, retry\n"]
        if verdict is Verdict.DENIED:
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="domainwatch"'), ("Content-Type", "text/plain")],
            )
            return [b"Unauthorized\n"]
        allowed = routes.get(path)
        if allowed is None and pages is not None and path.startswith(API_PREFIX):
            allowed = READ
        if allowed is None:
            return _text(start_response, "404 Not Found", "Not found\n")
        if method not in allowed:
            start_response(
                "405 Method Not Allowed",
                [("Allow", ", ".join(allowed)), ("Content-Type", "text/plain; charset=utf-8")],
            )
            return [f"Method not allowed; use {' or '.join(allowed)}\n".encode()]
        if path == telemetry_path:
            return metrics_app(environ, start_response)
        if path == PROBE_PATH and probe is not None:
            return probe(environ, start_response)
        if path == "/-/healthy":
            return _text(start_response, "200 OK", "OK\n")
        if path == "/-/ready":
            if ready():
                return _text(start_response, "200 OK", "Ready\n")
            return _text(start_response, "503 Service Unavailable", "Not ready\n")
        if path == "/-/reload":
            error = reload()
            if error:
                return _text(start_response, "500 Internal Server Error", error + "\n")
            return _text(start_response, "200 OK", "Reloaded\n")
        if pages is not None:
            return pages(environ, start_response)
        body = LANDING.format(
            version=__version__,
            telemetry=html.escape(telemetry_path.lstrip("/"), quote=True),
            telemetry_path=html.escape(telemetry_path),
        ).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    return app


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
