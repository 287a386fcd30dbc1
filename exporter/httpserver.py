"""A small HTTP/1.1 server for a WSGI app that no client can hold hostage.

Anyone who can reach the listen address can open connections, so the server bounds what each
one may cost:

- One asyncio event loop, on its own thread, owns every socket. A connection that is idle,
  still in its TLS handshake or dripping its request costs a file descriptor and a few KB,
  never a thread, so idle connections cannot starve the workers that answer scrapes.
- The TLS handshake runs on that loop, off the accept path, with a deadline
  (`Limits.handshake_timeout`): a client that opens TCP and sends nothing delays nobody.
- The whole request head (request line and headers) must arrive within
  `Limits.header_timeout` of the connection opening or of the previous response. It is one
  deadline for the head, not a per-read timeout, so a slowloris client that sends a byte a
  second is dropped on time. The same deadline is the keep-alive idle timeout.
- Only a complete, parsed request reaches the app, on a fixed pool of `Limits.workers`
  threads.
- At most `Limits.max_connections` connections are open. When full, the oldest connection that
  has not yet sent a complete request is dropped to make room, so a flood of idle connections
  cannot lock a scrape out.

Why not the standard library's ThreadingHTTPServer / wsgiref: one thread per connection, no
deadline on reading, and TLS wrapped around the listening socket does the handshake inside
accept() on the single serving thread. Why not cheroot (CherryPy's server): it also does the TLS
handshake on its accept thread (cherrypy/cheroot#748, open) and a connection that dribbles its
request holds a worker thread for as long as each single read stays under the timeout.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import io
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TLS_READ_BUFFER = 16 * 1024
_WRITE_HIGH_WATER = 1 << 20  # wait for the client once this much is buffered
_STREAM_BATCH = 256 * 1024  # bytes of a streamed body pulled per trip to a worker thread
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


@dataclass(frozen=True)
class Limits:
    """What one client may cost. The defaults are documented in the README (Security)."""

    handshake_timeout: float = 10.0  # TLS handshake, from accept
    header_timeout: float = 10.0  # whole request head; also the keep-alive idle time
    body_timeout: float = 10.0  # request body, once the head is in
    write_timeout: float = 10.0  # the response, for a client that does not read
    max_connections: int = 512
    workers: int = 8  # threads running the app
    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024


class ListenError(Exception):
    """The listen address cannot be used; the message names the flag value and the reason."""


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _Reject(Exception):
    """A request answered with an error status, after which the connection closes."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    waiting: bool = True  # no complete request read yet (since open or the last response)
    opened: float = field(default_factory=time.monotonic)


def bind(listen: str, default_port: int) -> socket.socket:
    """Open the listening socket for `listen` ("host:port", ":port", "[v6]:port").

    Raises ListenError with one line naming the address and the reason. An empty host listens
    on every address, IPv6 and IPv4 where the system has both.
    """
    host, port = _split(listen, default_port)
    if not 0 <= port <= 65535:
        raise ListenError(f"{listen!r} is not host:port with a port from 0 to 65535")
    try:
        if not host:
            if socket.has_dualstack_ipv6():
                return socket.create_server(
                    ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=128
                )
            return socket.create_server(("0.0.0.0", port), backlog=128)  # noqa: S104
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        return socket.create_server(address[:2], family=family, backlog=128)
    except socket.gaierror as exc:
        raise ListenError(f"{listen}: cannot resolve {host!r}: {exc.strerror}") from exc
    except OverflowError as exc:
        raise ListenError(f"{listen}: {exc}") from exc
    except OSError as exc:
        # create_server appends "(while attempting to bind on address ...)": we name it first.
        reason = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
        raise ListenError(f"{listen}: cannot listen: {reason}") from exc


def _split(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return host, -1
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif ":" in text:  # a bare IPv6 address without a port
        host, port = text, ""
    else:
        host, port = text, ""
    if not port:
        return host, default_port
    return host, int(port) if port.isascii() and port.isdigit() else -1


class HttpServer:
    """Serve a WSGI app on an already bound socket from a daemon thread.

        server = HttpServer(bind(":9877", 9877), tls_context_or_None)
        server.start(app)
        ...
        server.shutdown()
    """

    def __init__(
        self, sock: socket.socket, tls: ssl.SSLContext | None = None, limits: Limits | None = None
    ) -> None:
        self._sock = sock
        self._tls = tls
        if tls is not None and hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
            # asyncio gives every TLS connection a 256 KiB read buffer up front, so 512 idle
            # TLS connections would pin ~130 MB. One TLS record is at most 16 KiB; a smaller
            # buffer only costs more loop iterations on big uploads, which we refuse anyway.
            # Process-wide, but nothing else in the exporter uses asyncio's TLS.
            asyncio.sslproto.SSLProtocol.max_size = _TLS_READ_BUFFER
        self.limits = limits or Limits()
        self._app: WsgiApp | None = None
        self._conns: dict[_Conn, None] = {}  # insertion order == age, for eviction
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http-worker")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        name = sock.getsockname()
        self.host, self.port = str(name[0]), int(name[1])

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def start(self, app: WsgiApp) -> None:
        self._app = app
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)

    def shutdown(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sock.close()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._connection, sock=self._sock, limit=self.limits.max_head_bytes, backlog=128
        )
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for conn in list(self._conns):
                conn.writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        if len(self._conns) >= self.limits.max_connections and not self._evict_one():
            log.debug("http: connection limit %d reached, refusing", self.limits.max_connections)
            writer.transport.abort()
            return
        self._conns[conn] = None
        peer = writer.get_extra_info("peername")
        try:
            if self._tls is not None and not await self._handshake(writer, peer):
                return
            while True:
                conn.waiting = True
                request = await self._read_request(reader, writer, peer)
                if request is None:
                    return
                conn.waiting = False
                if not await self._respond(request, writer, peer):
                    return
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.debug("http: connection from %s ended: %s", _peer(peer), exc)
        except Exception as exc:  # one connection's bug must not reach the event loop's log
            name = type(exc).__name__
            log.warning("http: connection from %s failed: %s: %s", _peer(peer), name, exc)
            log.debug("http: connection traceback", exc_info=True)
        finally:
            self._conns.pop(conn, None)
            await self._close(writer)

    def _evict_one(self) -> bool:
        for conn in self._conns:
            if conn.waiting:
                del self._conns[conn]
                log.debug("http: connection limit reached, dropping the oldest idle connection")
                conn.writer.transport.abort()
                return True
        return False

    async def _handshake(self, writer: asyncio.StreamWriter, peer: Any) -> bool:
        assert self._tls is not None
        try:
            await writer.start_tls(self._tls, ssl_handshake_timeout=self.limits.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            log.debug("http: TLS handshake with %s failed: %s", _peer(peer), exc or type(exc))
            return False
        return True

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any
    ) -> _Request | None:
        try:
            async with asyncio.timeout(self.limits.header_timeout):
                head = b""
                while not head:
                    # Tolerate the blank lines some clients send between requests (RFC 9112 2.2).
                    head = (await reader.readuntil(b"\r\n\r\n")).lstrip(b"\r\n")
        except TimeoutError:
            log.debug(
                "http: %s sent no complete request within %.0fs, closing",
                _peer(peer),
                self.limits.header_timeout,
            )
            return None
        except asyncio.IncompleteReadError:
            return None  # the client closed the connection
        except asyncio.LimitOverrunError:
            await self._send_error(writer, "431 Request Header Fields Too Large")
            return None
        try:
            request = _parse_head(head)
            body = await self._read_body(reader, writer, request)
        except _Reject as exc:
            await self._send_error(writer, exc.status)
            return None
        except TimeoutError:
            log.debug("http: %s did not send its request body in time, closing", _peer(peer))
            return None
        except asyncio.IncompleteReadError:
            return None
        return replace(request, body=body)

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: _Request
    ) -> bytes:
        if "transfer-encoding" in request.headers:
            raise _Reject("501 Not Implemented")  # no chunked request bodies: nobody needs them
        raw = request.headers.get("content-length", "0").strip()
        if not (raw.isascii() and raw.isdigit()):
            raise _Reject("400 Bad Request")
        length = int(raw)
        if length > self.limits.max_body_bytes:
            raise _Reject("413 Content Too Large")
        if length == 0:
            return b""
        if request.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        async with asyncio.timeout(self.limits.body_timeout):
            return await reader.readexactly(length)

    async def _respond(self, request: _Request, writer: asyncio.StreamWriter, peer: Any) -> bool:
        environ = self._environ(request, writer, peer)
        loop = asyncio.get_running_loop()
        status, headers, body = await loop.run_in_executor(self._pool, self._call_app, environ)
        keep = request.keep_alive
        if isinstance(body, _Streamed):
            try:
                return await self._stream(request, writer, peer, status, headers, body) and keep
            finally:
                body.close()
        length = sum(len(chunk) for chunk in body)
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP_BY_HOP]
        lines += [f"Content-Length: {length}", f"Date: {formatdate(usegmt=True)}"]
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        log.debug(
            'http: %s "%s %s %s" %s %d',
            _peer(peer),
            request.method,
            request.target,
            request.version,
            status.split(" ", 1)[0],
            length,
        )
        if request.method == "HEAD":
            body = []
        return await self._write(writer, head, *body) and keep

    async def _stream(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        peer: Any,
        status: str,
        headers: list[tuple[str, str]],
        body: _Streamed,
    ) -> bool:
        """Send a body the app produces as it is sent (a plain /metrics of 100k domains,
        decompressed cell by cell): each chunk is pulled on a worker thread, so neither the
        loop nor memory ever holds the whole body. The length is the app's Content-Length; a
        body that ends early or runs long closes the connection (the client sees the error)."""
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP_BY_HOP]
        lines += [f"Content-Length: {body.length}", f"Date: {formatdate(usegmt=True)}"]
        if not request.keep_alive:
            lines.append("Connection: close")
        log.debug('http: %s "%s %s" %s %d (streamed)', _peer(peer), request.method,
                  request.target, status.split(" ", 1)[0], body.length)  # fmt: skip
        if not await self._write(writer, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")):
            return False
        if request.method == "HEAD":
            return True
        loop = asyncio.get_running_loop()
        sent = 0
        # One chunk ahead: the next is made (decompressed) on a worker while this one is sent.
        pending = loop.run_in_executor(self._pool, body.next_chunk)
        try:
            while True:
                chunk = await pending
                if chunk is None:
                    break
                sent += len(chunk)
                if sent > body.length:
                    break
                pending = loop.run_in_executor(self._pool, body.next_chunk)
                await self._push(writer, chunk)
            async with asyncio.timeout(self.limits.write_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
            return False
        except Exception as exc:  # the app's iterator failed half-way: nothing else to send
            log.error("http: %s %s failed while streaming: %s: %s", request.method,
                      request.target, type(exc).__name__, exc)  # fmt: skip
            writer.transport.abort()
            return False
        finally:
            if not pending.done():  # the iterator must be idle before the caller closes it
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(pending), self.limits.write_timeout)
        if sent != body.length:
            log.error("http: %s %s: the app declared %d bytes and produced %d", request.method,
                      request.target, body.length, sent)  # fmt: skip
            writer.transport.abort()
            return False
        return True

    async def _write(self, writer: asyncio.StreamWriter, *payload: bytes) -> bool:
        """Send the chunks in order without joining them: a /metrics body of 100k domains is
        hundreds of cached chunks, and copying them into one buffer would double its memory.
        Each wait for the client to take a megabyte is bounded by write_timeout."""
        try:
            for chunk in payload:
                await self._push(writer, chunk)
            async with asyncio.timeout(self.limits.write_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
            return False
        return True

    async def _push(self, writer: asyncio.StreamWriter, chunk: bytes) -> None:
        """Queue one chunk; wait (bounded) for the client only once a megabyte is buffered."""
        writer.write(chunk)
        if writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
            async with asyncio.timeout(self.limits.write_timeout):
                await writer.drain()

    async def _send_error(self, writer: asyncio.StreamWriter, status: str) -> None:
        body = (status + "\n").encode()
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        await self._write(writer, head.encode() + body)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        # close() waits to flush and, for TLS, for the peer's close_notify: bound both.
        writer.close()
        try:
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError, ssl.SSLError):
            writer.transport.abort()

    def _environ(
        self, request: _Request, writer: asyncio.StreamWriter, peer: Any
    ) -> dict[str, Any]:
        target = request.target
        if target.startswith(("http://", "https://")):  # absolute-form: keep the path only
            target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": request.version,
            "REMOTE_ADDR": str(peer[0]) if peer else "",
            "REMOTE_PORT": str(peer[1]) if peer else "",
            "CONTENT_LENGTH": str(len(request.body)) if request.body else "",
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self._tls is not None else "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = value
        return environ

    def _call_app(
        self, environ: dict[str, Any]
    ) -> tuple[str, list[tuple[str, str]], list[bytes] | _Streamed]:
        """Run the app on a worker thread; any exception is one log line and a 500. A body
        that is not a list and comes with a Content-Length is streamed (_Streamed), not
        collected here."""
        assert self._app is not None
        started: list[tuple[str, list[tuple[str, str]]]] = []
        chunks: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [(status, list(headers))]
            return chunks.append

        try:
            result = self._app(environ, start_response)
            length = _declared_length(started[0][1]) if started else None
            if not isinstance(result, list | tuple) and length is not None and not chunks:
                return started[0][0], started[0][1], _Streamed(result, length)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if not started:
                raise RuntimeError("the app did not call start_response")
        except Exception as exc:
            log.error(
                "http: %s %s failed: %s: %s",
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                type(exc).__name__,
                exc,
            )
            log.debug("http: app traceback", exc_info=True)
            body = b"Internal Server Error\n"
            return "500 Internal Server Error", [("Content-Type", "text/plain")], [body]
        status, headers = started[0]
        return status, headers, chunks


class _Streamed:
    """An app's body to pull chunk by chunk (on worker threads), with its declared length."""

    def __init__(self, body: Iterable[bytes], length: int) -> None:
        self._body = body
        self._chunks = iter(body)
        self.length = length

    def next_chunk(self) -> bytes | None:
        """The next ~256 KiB (or the rest): a hop to a worker thread per chunk would cost
        more than most chunks (cached gzip members of a few KB each)."""
        batch: list[bytes] = []
        size = 0
        for chunk in self._chunks:
            batch.append(chunk)
            size += len(chunk)
            if size >= _STREAM_BATCH:
                break
        return b"".join(batch) if batch else None

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _declared_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            value = value.strip()
            return int(value) if value.isascii() and value.isdigit() else None
    return None


def _parse_head(head: bytes) -> _Request:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _Reject("400 Bad Request")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Reject("505 HTTP Version Not Supported")
    if not target.startswith(("/", "http://", "https://")):
        raise _Reject("400 Bad Request")  # no "*" (OPTIONS) or authority-form (CONNECT)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Reject("400 Bad Request")  # also rejects obsolete line folding
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key == "content-length" and key in headers and headers[key] != text:
            raise _Reject("400 Bad Request")  # request smuggling guard
        if key in headers and key != "content-length":
            text = f"{headers[key]}, {text}"
        headers[key] = text
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = version == "HTTP/1.1" and "close" not in tokens
    return _Request(method, target, version, headers, b"", keep_alive)


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
