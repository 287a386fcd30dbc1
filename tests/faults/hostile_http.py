"""Hostile HTTPS servers on 127.81.x.y for the RDAP fault matrix.

    ca = trustme.CA()
    with HostileServer(ca, "127.81.0.1", names=("rdap.hostile.test",)) as srv:
        srv.set("/domain/victim.drip", drip(good_body, every=0.3))
        ... srv.base_url, srv.hostport, srv.requests_for("/domain/victim.drip") ...

Unlike tests/support/rdapserver.py (a polite registry), every byte on the wire is written by hand
so that the timing and the framing can be wrong on purpose: headers or bodies that drip, bodies
larger than announced or without end, gzip bombs, redirect loops, odd Retry-After values.
Each connection gets its own thread and is closed after one response (`Connection: close`), so a
dripping answer never holds up another request. The server records the SNI name and the Host
header of each request, which the pinning tests use to prove what the client connected to.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trustme

RDAP_JSON = "application/rdap+json"


@dataclass(frozen=True)
class Act:
    """How to answer one request.

    `header_drip` / `body_drip`: seconds between single bytes of the head / body (0 = at once).
    `extra_body`: this many more bytes after `body`, streamed in 64 KiB pieces without a
    Content-Length (the client sees a body that never seems to end). `hold`: seconds to sleep
    after the TLS handshake before anything is sent.
    """

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = RDAP_JSON
    content_length: bool = True
    header_drip: float = 0.0
    body_drip: float = 0.0
    extra_body: int = 0
    hold: float = 0.0


def json_act(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Act:
    return Act(status=status, body=json.dumps(obj).encode(), headers=tuple((headers or {}).items()))


def drip(body: bytes, every: float) -> Act:
    """A complete, valid answer, one body byte every `every` seconds."""
    return Act(body=body, body_drip=every)


def slow_headers(every: float) -> Act:
    return Act(body=b"{}", header_drip=every)


def silent(seconds: float = 30.0) -> Act:
    """TLS handshake done, then nothing at all."""
    return Act(hold=seconds)


def oversize(extra: int, *, declared: bool = False) -> Act:
    """A JSON string that goes on for `extra` bytes. `declared`: announce the size up front."""
    if declared:
        return Act(body=b'{"x": "' + b"a" * extra + b'"}')
    return Act(body=b'{"x": "', extra_body=extra, content_length=False)


@functools.cache
def _bomb(decoded: int) -> bytes:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    block = b"\0" * (1 << 20)
    parts = [squeeze.compress(block) for _ in range(decoded >> 20)]
    parts.append(squeeze.flush())
    return b"".join(parts)


def gzip_bomb(decoded: int) -> Act:
    """`decoded` bytes of zeros, gzip-compressed (~1000:1), announced as gzip."""
    return Act(body=_bomb(decoded), headers=(("Content-Encoding", "gzip"),))


def deep_json(depth: int) -> Act:
    return Act(body=b"[" * depth + b"]" * depth)


def raw_body(body: bytes) -> Act:
    return Act(body=body)


def redirect(location: str, status: int = 302) -> Act:
    return Act(status=status, headers=(("Location", location),))


def status_act(status: int, retry_after: str | None = None) -> Act:
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return Act(status=status, body=b'{"errorCode": %d}' % status, headers=headers)


@dataclass
class Seen:
    """One request as the server saw it. Times are time.time()."""

    received: float
    path: str
    host: str
    sni: str | None
    finished: float | None = None  # the answer was fully written (None: cut off or still going)


@dataclass
class _Conn:
    sock: socket.socket
    sni: list[str | None] = field(default_factory=lambda: [None])


class HostileServer:
    """HTTPS on `address`:<free port> with a TLS leaf for `address` and `names`."""

    def __init__(self, ca: trustme.CA, address: str, names: Sequence[str] = ()) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._routes: dict[str, list[Act]] = {}
        self._served: dict[str, int] = {}
        self._seen: list[Seen] = []
        self._live: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._sni_by_socket: dict[int, str | None] = {}

        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        ca.issue_cert(address, *names).configure_cert(self._context)
        self._context.sni_callback = self._on_sni

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((address, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"hostile-{address}:{self.port}")
        self._thread.start()

    # -- addresses -------------------------------------------------------------------------
    @property
    def hostport(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.hostport}/"

    def url(self, path: str) -> str:
        return f"https://{self.hostport}{path}"

    # -- programming -----------------------------------------------------------------------
    def set(self, path: str, *acts: Act) -> None:
        """Answer `path` with `acts` in turn, the last one repeating."""
        with self._lock:
            self._routes[path] = list(acts)
            self._served[path] = 0

    def requests_for(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if s.path == path]

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    @property
    def busy(self) -> int:
        """Connections open right now (an attack in progress)."""
        with self._lock:
            return len(self._live)

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------
    def _on_sni(self, sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self._sni_by_socket[id(sock)] = name

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        with self._lock:
            self._live.add(raw)
        try:
            raw.settimeout(10)
            tls = self._context.wrap_socket(raw, server_side=True)
            with self._lock:
                self._live.add(tls)
                sni = self._sni_by_socket.pop(id(tls), None)
            try:
                self._answer(tls, sni)
            finally:
                with self._lock:
                    self._live.discard(tls)
                with contextlib.suppress(OSError):
                    tls.close()
        except (OSError, ssl.SSLError):
            pass  # the client gave up: that is what most cells want
        finally:
            with self._lock:
                self._live.discard(raw)
            with contextlib.suppress(OSError):
                raw.close()

    def _read_head(self, tls: ssl.SSLSocket) -> bytes:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = tls.recv(4096)
            if not chunk or len(head) > 65536:
                return b""
            head += chunk
        return head

    def _answer(self, tls: ssl.SSLSocket, sni: str | None) -> None:
        head = self._read_head(tls)
        if not head:
            return
        lines = head.split(b"\r\n")
        path = lines[0].split(b" ")[1].decode("latin-1") if len(lines[0].split(b" ")) > 1 else ""
        host = ""
        for line in lines[1:]:
            if line.lower().startswith(b"host:"):
                host = line[5:].strip().decode("latin-1")
        seen = Seen(received=time.time(), path=path, host=host, sni=sni)
        with self._lock:
            self._seen.append(seen)
            acts = self._routes.get(path)
            if acts is None:
                act = json_act({"errorCode": 404, "title": "Not Found"}, status=404)
            else:
                served = self._served[path]
                self._served[path] = served + 1
                act = acts[min(served, len(acts) - 1)]
        if act.hold and self._stopping.wait(act.hold):
            return
        self._send(tls, act)
        seen.finished = time.time()

    def _send(self, tls: ssl.SSLSocket, act: Act) -> None:
        reason = {200: "OK", 302: "Found", 404: "Not Found", 429: "Too Many Requests"}
        header_lines = [f"HTTP/1.1 {act.status} {reason.get(act.status, 'Status')}",
                        f"Content-Type: {act.content_type}", "Connection: close"]
        if act.content_length and not act.extra_body:
            header_lines.append(f"Content-Length: {len(act.body)}")
        header_lines += [f"{k}: {v}" for k, v in act.headers]
        head = ("\r\n".join(header_lines) + "\r\n\r\n").encode("utf-8")
        self._write(tls, head, act.header_drip)
        self._write(tls, act.body, act.body_drip)
        left = act.extra_body
        piece = b"a" * 65536
        while left > 0 and not self._stopping.is_set():
            tls.sendall(piece[: min(left, len(piece))])
            left -= len(piece)

    def _write(self, tls: ssl.SSLSocket, data: bytes, every: float) -> None:
        if not every:
            tls.sendall(data)
            return
        for i in range(len(data)):
            tls.sendall(data[i : i + 1])
            if self._stopping.wait(every):
                return


def start_servers(ca: trustme.CA, addresses: Iterable[str], **kw: Any) -> list[HostileServer]:
    """Start one server per address; on failure stop the ones already started."""
    servers: list[HostileServer] = []
    try:
        for address in addresses:
            servers.append(HostileServer(ca, address, **kw))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
