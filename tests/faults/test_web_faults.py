"""Fault matrix, web side: hostile clients against the running exporter process.

Each cell attacks the real `python -m exporter` subprocess on 127.82.x over HTTP or HTTPS and
asserts what the issue asks for: a scrape during the attack answers in under 1 s, the attacker
is disconnected on time, threads and memory stay bounded, and the answer to odd methods is 405.
Cells are appended to $DOMAINWATCH_FAULT_REPORT (tests/faults/report.py) when it is set.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import select
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from exporter.httpserver import HttpServer, ListenError, bind
from exporter.web import load_web_config, tls_context
from tests.faults.report import record, rss_mb
from tests.faults.webexporter import WebExporter, WebSetup

HTTP_HOST = "127.82.0.1"
HTTPS_HOST = "127.82.0.2"
AUTH_HOST = "127.82.0.7"
# The documented defaults of exporter.httpserver.Limits (README, Security), as a client sees them.
HEADER_TIMEOUT = 10.0  # whole request head; also the TLS handshake deadline
MAX_CONNECTIONS = 512
MAX_THREADS = 40  # main + web loop + 8 web workers + asyncio's default executor + slack
MAX_RSS_MB = 120.0
SCRAPE_BUDGET = 1.0
AUTH_COST = 10  # bcrypt cost of the test user: big enough that a skipped check shows


@pytest.fixture(scope="module")
def http_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebExporter]:
    with WebExporter.start(tmp_path_factory.mktemp("web-http"), HTTP_HOST) as ex:
        yield ex


@pytest.fixture(scope="module")
def https_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebExporter]:
    tmp = tmp_path_factory.mktemp("web-https")
    web = WebSetup.make(tmp, HTTPS_HOST, users={"prometheus": "s3cret"}, cost=AUTH_COST)
    with WebExporter.start(tmp, HTTPS_HOST, web=web) as ex:
        yield ex


def _worst_scrape(ex: WebExporter, count: int = 5) -> tuple[float, str]:
    """The slowest of `count` scrapes (each on a new connection), or the failure."""
    worst = 0.0
    for _ in range(count):
        started = time.monotonic()
        try:
            worst = max(worst, ex.scrape_seconds(timeout=3))
        except OSError as exc:  # timeouts included
            return time.monotonic() - started, f"scrape failed: {type(exc).__name__}"
    return worst, "scrape ok"


class _Slowloris(threading.Thread):
    """Sends a never-ending request head one byte every 0.5 s; notes when the server hangs up."""

    def __init__(self, ex: WebExporter, budget: float) -> None:
        super().__init__(daemon=True)
        self.ex = ex
        self.budget = budget
        self.closed_after: float | None = None
        self.answered = b""

    def run(self) -> None:
        sock: socket.socket = socket.create_connection((self.ex.host, self.ex.port), timeout=5)
        if self.ex.web and self.ex.web.https:
            sock = self.ex.web.client_context().wrap_socket(sock, server_hostname=self.ex.host)
        started = time.monotonic()
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 100_000
        sock.settimeout(0.5)
        try:
            for byte in head:
                if time.monotonic() - started > self.budget:
                    return
                try:
                    sock.sendall(bytes([byte]))
                    data = sock.recv(1024)  # waits up to 0.5 s: the drip interval
                except TimeoutError:
                    continue
                except (OSError, ssl.SSLError):
                    break
                if not data:
                    break
                self.answered += data
                break
            self.closed_after = time.monotonic() - started
        finally:
            sock.close()


def _still_open(socks: list[socket.socket], until: float) -> int:
    """Wait until `until` for the server to close each socket; return how many it did not."""
    pending = list(socks)
    while pending and time.monotonic() < until:
        readable, _, _ = select.select(pending, [], [], max(0.0, until - time.monotonic()))
        for s in readable:
            with contextlib.suppress(OSError):  # b"" (FIN) or a reset: either way, dropped
                s.recv(1024)
            pending.remove(s)
    return len(pending)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_idle_flood_and_slowloris(scheme: str, request: pytest.FixtureRequest) -> None:
    """300 idle TCP connections (no bytes, so on HTTPS no ClientHello either) and one slowloris
    client: scrapes still answer in under 1 s, no thread per connection, and every attacker is
    dropped at the header/handshake deadline although the slowloris never stops sending."""
    ex: WebExporter = request.getfixturevalue(f"{scheme}_exporter")
    started = time.monotonic()
    idle = [socket.create_connection((ex.host, ex.port), timeout=5) for _ in range(300)]
    slow = _Slowloris(ex, budget=HEADER_TIMEOUT + 6)
    slow.start()
    try:
        time.sleep(0.3)  # the server has accepted them all
        worst, outcome = _worst_scrape(ex)
        threads, rss = ex.threads(), rss_mb(ex.pid)
        ok = worst < SCRAPE_BUDGET and threads <= MAX_THREADS and rss < MAX_RSS_MB
        record(f"web.idle_tcp_300.{scheme}", f"{outcome}, {threads} threads", worst, rss, ok)
        assert outcome == "scrape ok", f"{outcome} after {worst:.2f}s\n{ex.log_tail()}"
        assert worst < SCRAPE_BUDGET, f"slowest scrape {worst:.3f}s under 300 idle connections"
        assert threads <= MAX_THREADS, f"{threads} threads for 300 idle connections"
        assert rss < MAX_RSS_MB

        slow.join(timeout=HEADER_TIMEOUT + 8)
        closed = slow.closed_after
        ok = closed is not None and HEADER_TIMEOUT - 1 <= closed <= HEADER_TIMEOUT + 3
        record(
            f"web.slowloris.{scheme}",
            "never dropped" if closed is None else f"dropped after {closed:.1f}s",
            closed if closed is not None else slow.budget,
            rss_mb(ex.pid),
            ok and not slow.answered,
        )
        assert not slow.answered, f"server answered a request it never got: {slow.answered!r}"
        assert closed is not None, "slowloris client never disconnected"
        assert HEADER_TIMEOUT - 1 <= closed <= HEADER_TIMEOUT + 3, closed

        left = _still_open(idle, until=started + HEADER_TIMEOUT + 4)
        record(
            f"web.idle_tcp_300_dropped.{scheme}",
            f"{300 - left} of 300 closed by the server",
            time.monotonic() - started,
            rss_mb(ex.pid),
            left == 0,
        )
        assert left == 0, f"{left} idle connections still open after the deadline"
        assert ex.scrape_seconds() < SCRAPE_BUDGET
    finally:
        for s in idle:
            s.close()


def test_connection_flood_beyond_the_cap(http_exporter: WebExporter) -> None:
    """More idle connections than the server keeps (Limits.max_connections): the oldest idle
    ones make room, so a scrape still gets through at once."""
    ex = http_exporter
    count = MAX_CONNECTIONS + 200
    socks = [socket.create_connection((ex.host, ex.port), timeout=5) for _ in range(count)]
    try:
        time.sleep(0.3)
        worst, outcome = _worst_scrape(ex, count=3)
        threads, rss = ex.threads(), rss_mb(ex.pid)
        ok = outcome == "scrape ok" and worst < SCRAPE_BUDGET and threads <= MAX_THREADS
        record(f"web.idle_tcp_{count}_over_cap.http", f"{outcome}, {threads} threads",
               worst, rss, ok)
        assert outcome == "scrape ok" and worst < SCRAPE_BUDGET, (outcome, worst)
        assert threads <= MAX_THREADS
        assert rss < MAX_RSS_MB
    finally:
        for s in socks:
            s.close()


def test_methods(http_exporter: WebExporter) -> None:
    """Only GET/HEAD read, only POST reloads; anything else is 405 naming what is allowed."""
    ex = http_exporter
    started = time.monotonic()
    wrong = {}
    for method in ("PUT", "DELETE", "POST", "PATCH", "OPTIONS", "BREW"):
        status, headers, _ = ex.request(method, "/metrics")
        if status != 405 or headers.get("allow") != "GET, HEAD":
            wrong[method] = (status, headers.get("allow"))
    status, headers, _ = ex.request("GET", "/-/reload")
    if status != 405 or headers.get("allow") != "POST":
        wrong["GET /-/reload"] = (status, headers.get("allow"))
    head_status, head_headers, head_body = ex.request("HEAD", "/metrics")
    get_status, _, get_body = ex.request("GET", "/metrics")
    record("web.methods", f"wrong answers: {sorted(wrong) or 'none'}",
           time.monotonic() - started, rss_mb(ex.pid), not wrong)
    assert not wrong
    assert head_status == 200 and head_body == b""
    assert int(head_headers["content-length"]) > 0
    assert get_status == 200 and b"domainwatch_build_info" in get_body
    assert ex.request("GET", "/nope")[0] == 404
    assert ex.request("PUT", "/nope")[0] == 404


def test_keep_alive_and_gzip(http_exporter: WebExporter) -> None:
    """Prometheus reuses its connection and asks for gzip: both keep working, and the gzip
    body (several members) holds the same families as the plain one."""
    plain = http_exporter.request("GET", "/metrics")[2].decode()
    conn = http_exporter.connection()
    try:
        for _ in range(3):
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and resp.getheader("Content-Encoding") == "gzip"
            text = gzip.decompress(body).decode()
            assert _families(text) == _families(plain)
            assert "domain_check_success" in _families(text)
    finally:
        conn.close()


def _families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def test_bad_requests_are_refused(http_exporter: WebExporter) -> None:
    ex = http_exporter

    def raw(payload: bytes) -> bytes:
        with socket.create_connection((ex.host, ex.port), timeout=3) as s:
            s.sendall(payload)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out

    assert raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /metrics HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505")
    big = b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    assert raw(big).startswith(b"HTTP/1.1 431")
    body = b"POST /-/reload HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n"
    assert raw(body).startswith(b"HTTP/1.1 413")
    chunked = b"POST /-/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert raw(chunked).startswith(b"HTTP/1.1 501")


def test_unknown_user_costs_as_much_as_a_wrong_password(https_exporter: WebExporter) -> None:
    """No user enumeration by timing: an unknown user is checked against a dummy hash."""
    ex = https_exporter

    def auth(credentials: bytes) -> str:
        return "Basic " + base64.b64encode(credentials).decode()

    conn = ex.connection(timeout=5)
    timings: dict[str, list[float]] = {"unknown": [], "known-wrong": []}
    statuses = set()
    try:
        # One kept-alive connection: no TLS handshake in the numbers, interleaved to share noise.
        for _ in range(7):
            for kind, credentials in (
                ("unknown", b"nobody:s3cret"),
                ("known-wrong", b"prometheus:wrong"),
            ):
                started = time.perf_counter()
                conn.request("GET", "/metrics", headers={"Authorization": auth(credentials)})
                resp = conn.getresponse()
                resp.read()
                timings[kind].append(time.perf_counter() - started)
                statuses.add(resp.status)
    finally:
        conn.close()
    unknown = statistics.median(timings["unknown"])
    wrong = statistics.median(timings["known-wrong"])
    ratio = unknown / wrong
    record(
        "web.auth_timing",
        f"median unknown {unknown * 1000:.1f} ms, known-wrong {wrong * 1000:.1f} ms",
        unknown + wrong,
        rss_mb(ex.pid),
        0.5 <= ratio <= 2.0 and statuses == {401},
    )
    assert statuses == {401}
    assert 0.5 <= ratio <= 2.0, f"unknown {unknown * 1000:.1f} ms vs wrong {wrong * 1000:.1f} ms"
    assert ex.request("GET", "/metrics")[0] == 200
    assert ex.request("GET", "/metrics", auth=None)[0] == 401


def test_wrong_password_flood_does_not_starve_scrapes(tmp_path: Path) -> None:
    """24 clients sending wrong passwords as fast as they are answered: bcrypt runs on at most
    two threads and the rest are told 503 at once, so the web workers stay free and a scrape
    with (remembered) good credentials still answers in under 1 s."""
    web = WebSetup.make(tmp_path, AUTH_HOST, users={"prometheus": "s3cret"}, cost=AUTH_COST,
                        https=False)
    with WebExporter.start(tmp_path, AUTH_HOST, web=web) as ex:
        ex.scrape_seconds()  # the good credentials are checked once and remembered
        stop = threading.Event()
        answers: dict[int, int] = {}
        lock = threading.Lock()
        wrong = "Basic " + base64.b64encode(b"prometheus:guess").decode()
        request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\n\r\n".encode()

        def attack() -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection((ex.host, ex.port), timeout=5) as s:
                        while not stop.is_set():
                            s.sendall(request)
                            head = s.recv(65536)
                            if not head:
                                break
                            code = int(head.split(b" ", 2)[1])
                            with lock:
                                answers[code] = answers.get(code, 0) + 1
                except (OSError, ValueError, IndexError):
                    time.sleep(0.05)

        attackers = [threading.Thread(target=attack, daemon=True) for _ in range(24)]
        for t in attackers:
            t.start()
        try:
            time.sleep(1.0)  # the flood is in full swing
            worst, outcome = _worst_scrape(ex)
            threads, rss = ex.threads(), rss_mb(ex.pid)
        finally:
            stop.set()
            for t in attackers:
                t.join(timeout=10)
        ok = outcome == "scrape ok" and worst < SCRAPE_BUDGET and threads <= MAX_THREADS
        got = dict(sorted(answers.items()))
        record("web.wrong_password_flood", f"{outcome}; attackers got {got}", worst, rss, ok)
        assert outcome == "scrape ok", outcome
        assert worst < SCRAPE_BUDGET, f"slowest scrape {worst:.3f}s during the flood ({answers})"
        assert set(answers) <= {401, 503} and answers.get(401), answers  # guessing still checked


def test_https_refuses_plain_http(https_exporter: WebExporter) -> None:
    with pytest.raises((OSError, http.client.HTTPException)):
        conn = http.client.HTTPConnection(https_exporter.host, https_exporter.port, timeout=3)
        try:
            conn.request("GET", "/metrics")
            conn.getresponse().read()
        finally:
            conn.close()



# --- In-process: the same server, for what needs no exporter around it ---


def _hello(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello {environ['wsgi.url_scheme']}\n".encode()]


def test_ipv6_listen_address() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = bind("[::1]:0", 9877)
    except ListenError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    server = HttpServer(sock)
    server.start(_hello)
    try:
        conn = http.client.HTTPConnection("::1", server.port, timeout=3)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello http\n"
        conn.close()
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("auth_type", "with_cert", "served"),
    [
        ("RequireAndVerifyClientCert", True, True),
        ("RequireAndVerifyClientCert", False, False),
        ("VerifyClientCertIfGiven", False, True),
        ("VerifyClientCertIfGiven", True, True),
    ],
)
def test_client_certificates(tmp_path: Path, auth_type: str, with_cert: bool, served: bool) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert(HTTPS_HOST)
    leaf.private_key_pem.write_to_path(str(tmp_path / "web.key"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "web.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    # Relative names: relative to the web config file, as in exporter-toolkit.
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: web.crt\n  key_file: web.key\n"
        f"  client_ca_file: clients.pem\n  client_auth_type: {auth_type}\n"
    )
    config = load_web_config(str(tmp_path / "web.yml"))
    server = HttpServer(bind(f"{HTTPS_HOST}:0", 9877), tls_context(config))
    server.start(_hello)
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        if with_cert:
            ca.issue_cert("prometheus@example.test").configure_cert(ctx)
        conn = http.client.HTTPSConnection(HTTPS_HOST, server.port, timeout=3, context=ctx)
        try:
            conn.request("GET", "/")
            body = conn.getresponse().read()
            assert served and body == b"hello https\n"
        except (OSError, http.client.HTTPException):
            assert not served
        finally:
            conn.close()
    finally:
        server.shutdown()
