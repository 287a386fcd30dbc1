"""A real WHOIS (RFC 3912) server on loopback for tests, programmable while it runs.

    with WhoisServer("127.89.0.1") as server:
        server.set("meta.jp", Reply(fixture("jprs_meta.jp.txt")))
        server.set("slow.jp", Reply(fixture("jprs_meta.jp.txt"), drip=0.5))   # a byte per 0.5 s
        server.set("rude.jp", Reply(close_without_answer=True))
        ... server.address ("127.89.0.1:PORT"), server.queries_for("meta.jp") ...

One TCP connection per query, as registries do: the server reads one line, answers, and closes.
The domain a query is about is its last word without JPRS's "/e" (so "-T dn,ace google.de" and
"google.jp/e" both find their reply); every query is recorded with its arrival time and the exact
line, so tests can assert pacing and query syntax from what the server actually saw. Unknown
names get `default` (None: close without answering).
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "whois"


def fixture(name: str) -> bytes:
    """A collected real response (see tests/fixtures/whois/SOURCES.md), as the registry sent it.
    The WhoisDomain samples start with two lines the `whois` command-line client printed
    ("[Querying whois.jprs.jp]", "[whois.jprs.jp]"); the registry never sent them, so the
    server leaves them out."""
    data = (FIXTURES / name).read_bytes()
    lines = data.split(b"\n")
    while lines and (lines[0].startswith(b"[Querying ") or lines[0] == b"[whois.jprs.jp]"):
        lines.pop(0)
    return b"\n".join(lines)


@dataclass(frozen=True)
class Reply:
    body: bytes = b""
    delay: float = 0.0  # before the first byte
    drip: float = 0.0  # seconds between single bytes (a server that drips)
    close_without_answer: bool = False  # accept, read the query, close


@dataclass(frozen=True)
class Query:
    received: float  # time.time()
    line: str  # the query as sent, without CRLF
    domain: str


@dataclass
class _State:
    replies: dict[str, Reply] = field(default_factory=dict)
    default: Reply | None = None
    queries: list[Query] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def query_domain(line: str) -> str:
    words = line.strip().split()
    word = words[-1] if words else ""
    return word.removesuffix("/e").lower().rstrip(".")


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        state = self.server.state
        sock: socket.socket = self.request
        sock.settimeout(5)
        data = b""
        try:
            while b"\n" not in data and len(data) < 2048:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return
        line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
        domain = query_domain(line)
        with state.lock:
            state.queries.append(Query(time.time(), line, domain))
            reply = state.replies.get(domain, state.default)
        if reply is None or reply.close_without_answer:
            return
        try:
            if reply.delay and state.stop.wait(reply.delay):
                return
            if reply.drip:
                for i in range(len(reply.body)):
                    sock.sendall(reply.body[i : i + 1])
                    if state.stop.wait(reply.drip):
                        return
            else:
                sock.sendall(reply.body)
        except OSError:
            return  # the client gave up (a deadline): that is what such tests provoke


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State


class WhoisServer:
    def __init__(self, host: str = "127.89.0.1", port: int = 0, default: Reply | None = None):
        self.state = _State(default=default)
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """What `whois.servers` takes: "host:port"."""
        return f"{self.host}:{self.port}"

    def set(self, domain: str, reply: Reply) -> None:
        with self.state.lock:
            self.state.replies[domain.lower()] = reply

    def queries(self) -> list[Query]:
        with self.state.lock:
            return list(self.state.queries)

    def queries_for(self, domain: str) -> list[Query]:
        return [q for q in self.queries() if q.domain == domain.lower()]

    def start(self) -> WhoisServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WhoisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
