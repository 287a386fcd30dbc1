"""A real HTTPS RDAP server on loopback for integration tests, programmable while it runs.

    ca = trustme.CA()
    with RdapServer(ca) as registry:
        registry.set_domain("healthy.test", Reply(body=make_domain("healthy.test", ...)))
        registry.set_domain("busy.test", Reply(status=429, headers={"Retry-After": "5"}), ok)
        ... registry.base_url, registry.hostport, registry.requests_for("healthy.test") ...

Each server has its own port and its own TLS leaf (signed by the CA it is given), so several can
run at once (registry A, registry B, a registrar). Every request is logged with its arrival and
reply times, so tests can assert pacing and back-off from what the server actually saw.

Only `http.server`, `ssl` and `trustme` are used: the exporter talks to it exactly as it would to
a registry (TLS >= 1.2, HTTP/1.1 keep-alive, Content-Length, `application/rdap+json`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

RDAP_JSON = "application/rdap+json"


@dataclass(frozen=True)
class Reply:
    """One programmed answer.

    `body` is a dict/list (sent as JSON), raw bytes (sent verbatim, e.g. malformed JSON), or None
    (empty body). `delay` sleeps before answering (to provoke client timeouts); `gate`, if given,
    holds the answer until the test sets the event (bounded by `gate_timeout`).
    """

    status: int = 200
    body: Mapping[str, Any] | Sequence[Any] | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = RDAP_JSON
    delay: float = 0.0
    gate: threading.Event | None = None
    gate_timeout: float = 30.0

    def encoded_body(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class RequestRecord:
    """What the server saw. Times are `time.time()` wall-clock seconds."""

    received: float
    path: str
    headers: dict[str, str]
    status: int | None = None  # None while still being answered / client went away first
    replied: float | None = None


def error_body(code: int, title: str, description: str) -> dict[str, Any]:
    """An RFC 9083 section 6 error object."""
    return {
        "rdapConformance": ["rdap_level_0"],
        "errorCode": code,
        "title": title,
        "description": [description],
    }


def not_found_reply() -> Reply:
    return Reply(status=404, body=error_body(404, "Not Found", "The domain was not found."))


class _Route:
    """A sequence of replies; the last one repeats forever."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        if not replies:
            raise ValueError("a route needs at least one reply")
        self._replies = list(replies)
        self._served = 0

    def next(self) -> Reply:
        reply = self._replies[min(self._served, len(self._replies) - 1)]
        self._served += 1
        return reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real registry front end
    server: _TLSServer

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0].split("#", 1)[0].lower()
        index = owner._log_request(path, {k.lower(): v for k, v in self.headers.items()})
        reply = owner._reply_for(path)
        if reply.gate is not None:
            reply.gate.wait(reply.gate_timeout)
        if reply.delay > 0 and owner._stopping.wait(reply.delay):
            return
        body = reply.encoded_body()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (OSError, ssl.SSLError):
            return  # the client gave up (timeout): that is what the test wanted
        owner._log_reply(index, reply.status)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is the record; keep pytest output clean


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, owner: RdapServer, context: ssl.SSLContext, host: str = "127.0.0.1"
    ) -> None:
        self.owner = owner
        self.context = context
        super().__init__((host, 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the per-connection thread, so that a slow or broken
        # client cannot stall the accept loop (and with it every other test request).
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        self.owner._track(tls, True)
        try:
            super().finish_request(tls, client_address)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.owner._track(tls, False)
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connection resets from clients that timed out are expected


class RdapServer:
    """HTTPS RDAP server on 127.0.0.1:<free port>, answering from a programmable route table.

    `host` binds another loopback address instead (a test module's own 127.N.x.y range); the
    certificate then names that address too.
    """

    def __init__(
        self,
        ca: trustme.CA,
        *,
        hostnames: Iterable[str] = ("127.0.0.1", "localhost"),
        host: str = "127.0.0.1",
    ):
        self.ca = ca
        self.host = host
        hostnames = tuple(hostnames)
        if host not in hostnames:
            hostnames += (host,)
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._default: Reply = not_found_reply()
        self._log: list[RequestRecord] = []
        self._stopping = threading.Event()
        self._connections: set[ssl.SSLSocket] = set()

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        ca.issue_cert(*hostnames).configure_cert(context)
        self._httpd = _TLSServer(self, context, host)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"rdap-{self.port}", daemon=True,
        )
        self._thread.start()

    # -- addresses -------------------------------------------------------------------------
    @property
    def hostport(self) -> str:
        """`HOST:PORT`: the `server` label the exporter uses for this host."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}/"

    def domain_url(self, name: str) -> str:
        return f"{self.base_url}domain/{name}"

    # -- programming -----------------------------------------------------------------------
    def set(self, path: str, *replies: Reply) -> None:
        """Answer `path` with `replies` in order, the last one repeating. Replaces any route."""
        with self._lock:
            self._routes[path.lower()] = _Route(replies)

    def set_domain(self, name: str, *replies: Reply) -> None:
        self.set(f"/domain/{name.lower()}", *replies)

    def clear(self, path: str) -> None:
        with self._lock:
            self._routes.pop(path.lower(), None)

    def set_default(self, reply: Reply) -> None:
        """What unknown paths get; an RFC 9083 404 unless changed."""
        with self._lock:
            self._default = reply

    # -- the request log -------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def requests_for(self, name: str) -> list[RequestRecord]:
        path = f"/domain/{name.lower()}"
        return [r for r in self.requests if r.path == path]

    def wait_for_request(self, name: str, count: int = 1, timeout: float = 10.0) -> RequestRecord:
        """Block until `name` has been asked for `count` times; return that request."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.requests_for(name)
            if len(seen) >= count:
                return seen[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.hostport}: {len(seen)} request(s) for {name} within {timeout}s, "
                    f"wanted {count}; all paths seen: {[r.path for r in self.requests]}"
                )
            time.sleep(0.02)

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:  # idle keep-alive connections would otherwise linger
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> RdapServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------
    def _track(self, conn: ssl.SSLSocket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _log_request(self, path: str, headers: dict[str, str]) -> int:
        with self._lock:
            self._log.append(RequestRecord(received=time.time(), path=path, headers=headers))
            return len(self._log) - 1

    def _log_reply(self, index: int, status: int) -> None:
        with self._lock:
            old = self._log[index]
            self._log[index] = RequestRecord(
                received=old.received, path=old.path, headers=old.headers,
                status=status, replied=time.time(),
            )

    def _reply_for(self, path: str) -> Reply:
        with self._lock:
            route = self._routes.get(path)
            return route.next() if route is not None else self._default


def write_ca(ca: trustme.CA, path: Path) -> Path:
    """Write the CA certificate (what the exporter's `rdap.ca_file` points at)."""
    ca.cert_pem.write_to_path(str(path))
    return path


def write_bootstrap(
    path: Path,
    services: Mapping[str, str | RdapServer],
    publication: str = "2026-11-01T00:00:00Z",
) -> Path:
    """Write an RFC 9224 bootstrap file mapping each TLD to a server (or a base URL string)."""
    by_url: dict[str, list[str]] = {}
    for tld, target in services.items():
        url = target.base_url if isinstance(target, RdapServer) else target
        by_url.setdefault(url, []).append(tld.lower())
    document = {
        "version": "1.0",
        "publication": publication,
        "description": "synthetic bootstrap for domainwatch integration tests",
        "services": [[sorted(tlds), [url]] for url, tlds in by_url.items()],
    }
    path.write_text(json.dumps(document, indent=2))
    return path


def rdap_date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_domain(
    name: str,
    expiry: datetime | None,
    statuses: Sequence[str],
    nameservers: Sequence[str],
    registrar_name: str,
    registrar_iana_id: str,
    related_registrar_url: str | None = None,
    contacts: Mapping[str, str] | None = None,
    *,
    self_url: str | None = None,
    registrar_expiry: datetime | None = None,
    registered: datetime | None = None,
) -> dict[str, Any]:
    """An RFC 9083 domain object shaped like Verisign's `verisign-thin_hhgames.com.json`.

    `contacts` maps a role (registrant, technical, ...) to an e-mail and becomes one entity per
    role with a jCard. `related_registrar_url` adds the thin-registry `rel: related` link.
    `registrar_expiry` adds a `registrar expiration` event (what registrar RDAP servers publish).
    """
    links: list[dict[str, str]] = []
    if self_url:
        links.append({"value": self_url, "rel": "self", "href": self_url, "type": RDAP_JSON})
    if related_registrar_url:
        links.append({
            "value": related_registrar_url, "rel": "related", "href": related_registrar_url,
            "type": RDAP_JSON,
        })
    entities: list[dict[str, Any]] = [{
        "objectClassName": "entity",
        "handle": registrar_iana_id,
        "roles": ["registrar"],
        "publicIds": [{"type": "IANA Registrar ID", "identifier": registrar_iana_id}],
        "vcardArray": [
            "vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", registrar_name]],
        ],
        "entities": [{
            "objectClassName": "entity",
            "roles": ["abuse"],
            "vcardArray": ["vcard", [
                ["version", {}, "text", "4.0"],
                ["fn", {}, "text", ""],
                ["tel", {"type": "voice"}, "uri", "tel:+1.5555550100"],
                ["email", {}, "text", "abuse@registrar.invalid"],
            ]],
        }],
    }]
    for role, email in (contacts or {}).items():
        entities.append({
            "objectClassName": "entity",
            "handle": f"{role.upper()}-{name.upper()}",
            "roles": [role],
            "vcardArray": ["vcard", [
                ["version", {}, "text", "4.0"],
                ["fn", {}, "text", f"{role.title()} of {name}"],
                ["email", {}, "text", email],
            ]],
        })
    events: list[dict[str, str]] = [{
        "eventAction": "registration",
        "eventDate": rdap_date(registered or datetime(2002, 7, 4, 19, 15, 32, tzinfo=UTC)),
    }]
    if expiry is not None:
        events.append({"eventAction": "expiration", "eventDate": rdap_date(expiry)})
    if registrar_expiry is not None:
        events.append(
            {"eventAction": "registrar expiration", "eventDate": rdap_date(registrar_expiry)}
        )
    events += [
        {"eventAction": "last changed", "eventDate": "2025-04-16T04:27:20Z"},
        {"eventAction": "last update of RDAP database", "eventDate": rdap_date(datetime.now(UTC))},
    ]
    return {
        "objectClassName": "domain",
        "handle": f"{zlib.crc32(name.encode()) % 10**8}_DOMAIN_TEST-SYNTH",
        "ldhName": name.upper(),  # registries shout (Verisign); the exporter must not care
        "links": links,
        "status": list(statuses),
        "entities": entities,
        "events": events,
        "secureDNS": {"delegationSigned": False},
        "nameservers": [
            {"objectClassName": "nameserver", "ldhName": ns.upper()} for ns in nameservers
        ],
        "rdapConformance": [
            "rdap_level_0",
            "icann_rdap_technical_implementation_guide_1",
            "icann_rdap_response_profile_1",
        ],
        "notices": [{
            "title": "Terms of Service",
            "description": ["Synthetic test data for domainwatch."],
        }],
    }
