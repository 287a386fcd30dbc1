"""The HTTP side: /metrics, a landing page, health/readiness, POST /-/reload, and the optional
Prometheus web-config file (TLS and basic auth), served from a daemon thread."""

from __future__ import annotations

import base64
import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bcrypt
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from exporter import __version__
from exporter.config import split_host_port

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

LANDING = """<!doctype html>
<html><head><title>domainwatch</title></head>
<body>
<h1>domainwatch {version}</h1>
<p>Prometheus exporter for domain registration, delegation and contact health.</p>
<ul>
<li><a href="metrics">/metrics</a>: last known results of the background checks</li>
<li><a href="-/healthy">/-/healthy</a>, <a href="-/ready">/-/ready</a></li>
<li><code>POST /-/reload</code>: re-read the configuration file</li>
</ul>
</body></html>
"""


class WebConfigError(ValueError):
    pass


@dataclass(frozen=True)
class WebConfig:
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    basic_auth_users: dict[str, str] = field(default_factory=dict)  # user -> bcrypt hash


def load_web_config(path: str) -> WebConfig:
    """Read the Prometheus exporter-toolkit web config (tls_server_config, basic_auth_users)."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError(f"{path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise WebConfigError(f"{path}: must be a mapping")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise WebConfigError(f"{path}: unknown keys {sorted(unknown)}")
    tls = doc.get("tls_server_config") or {}
    users = doc.get("basic_auth_users") or {}
    if not isinstance(tls, dict) or not isinstance(users, dict):
        raise WebConfigError(f"{path}: tls_server_config and basic_auth_users must be mappings")
    if bool(tls.get("cert_file")) != bool(tls.get("key_file")):
        raise WebConfigError(f"{path}: tls_server_config needs both cert_file and key_file")
    return WebConfig(
        cert_file=tls.get("cert_file"),
        key_file=tls.get("key_file"),
        client_ca_file=tls.get("client_ca_file"),
        client_auth_type=str(tls.get("client_auth_type", "NoClientCert")),
        basic_auth_users={str(k): str(v) for k, v in users.items()},
    )


def _authorized(environ: Environ, users: dict[str, str]) -> bool:
    header = environ.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False

    stored = users.get(user)
    return stored is not None and bool(bcrypt.checkpw(password.encode(), stored.encode()))


def make_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    reload: Callable[[], str | None],
    users: dict[str, str] | None = None,
    domain_exposition: Callable[[], bytes] | None = None,
) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """`registry` holds the exporter's own metrics; `domain_exposition` renders the per-domain
    families (DomainCollector.exposition) and is appended to them."""

    def metrics_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = generate_latest(registry)
        if domain_exposition is not None:
            body += domain_exposition()
        headers = [("Content-Type", CONTENT_TYPE_LATEST)]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            # Level 1: the text compresses ~15x anyway and the scrape stays fast.
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if users and not _authorized(environ, users):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="domainwatch"'), ("Content-Type", "text/plain")],
            )
            return [b"Unauthorized\n"]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/-/healthy":
            return _text(start_response, "200 OK", "OK\n")
        if path == "/-/ready":
            if ready():
                return _text(start_response, "200 OK", "Ready\n")
            return _text(start_response, "503 Service Unavailable", "Not ready\n")
        if path == "/-/reload":
            if method != "POST":
                return _text(start_response, "405 Method Not Allowed", "Use POST\n")
            error = reload()
            if error:
                return _text(start_response, "500 Internal Server Error", error + "\n")
            return _text(start_response, "200 OK", "Reloaded\n")
        if path == "/":
            body = LANDING.format(version=__version__).encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [body]
        return _text(start_response, "404 Not Found", "Not found\n")

    return app


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve(
    listen: str,
    app: Callable[[Environ, StartResponse], Iterable[bytes]],
    web_config: WebConfig | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Bind `listen` ("host:port", ":port", "[::]:port") and serve `app` from a daemon thread."""
    host, port = split_host_port(listen, 9877)
    if port < 0:
        raise ValueError(f"--web.listen-address {listen!r} is not host:port")
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = infos[0][0]
    address = str(infos[0][4][0])

    class Server(_ThreadingServer):
        address_family = family

    server = make_server(address, port, app, Server, handler_class=_QuietHandler)
    if web_config and web_config.cert_file and web_config.key_file:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(web_config.cert_file, web_config.key_file)
        if web_config.client_ca_file:
            ctx.load_verify_locations(web_config.client_ca_file)
        if web_config.client_auth_type == "RequireAndVerifyClientCert":
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif web_config.client_auth_type == "VerifyClientCertIfGiven":
            ctx.verify_mode = ssl.CERT_OPTIONAL
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, thread
