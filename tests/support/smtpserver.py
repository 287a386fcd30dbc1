"""A real SMTP server on loopback (aiosmtpd) that plays a mail exchanger for the probe tests.

It listens on 127.53.1.25 (the A record of `mail.mx-ok.test` in `tests/support/dnsworld.py`),
port 2525 by default, and answers RCPT TO by mailbox:

    ok@mx-ok.test      250 (accepted)
    gone@mx-ok.test    550 (no such user)
    grey@mx-ok.test    450 (greylisted)
    anything else      550

Every line a client sends is recorded (`commands`, and per connection in `sessions`), so a test
can assert what a client did *not* send, above all DATA. `reject_ehlo = True` makes the server
answer EHLO with 502, as a pre-ESMTP server would, to exercise a client's HELO fallback.

    from tests.support.smtpserver import smtp_server  # noqa: F401  (module-scoped fixture)

    def test_x(smtp_server: SmtpServer) -> None:
        smtp_server.clear()
        ...
        assert "DATA" not in smtp_server.verbs()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

SMTP_HOST = "127.53.1.25"
SMTP_PORT = 2525

RCPT_REPLIES = {
    "ok@mx-ok.test": "250 2.1.5 Recipient OK",
    "gone@mx-ok.test": "550 5.1.1 No such user here",
    "grey@mx-ok.test": "450 4.7.1 Greylisted, please try again later",
}
DEFAULT_RCPT_REPLY = "550 5.1.1 Unknown recipient"


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        if self._server.reject_ehlo:
            return ["502 5.5.2 EHLO not implemented, use HELO"]
        session.host_name = hostname  # the new-style hook must set it itself
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = RCPT_REPLIES.get(address.lower(), DEFAULT_RCPT_REPLY)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._server.record(-1, "<message received>")
        return "250 2.0.0 Accepted"


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP, with every line read from the client copied into the owning server."""

    def __init__(self, owner: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        session = self._owner.new_session()
        read_until, read_line = reader.readuntil, reader.readline

        async def recording_readuntil(separator: bytes = b"\n") -> bytes:
            line = await read_until(separator)
            self._owner.record(session, line.decode("utf-8", "replace").rstrip("\r\n"))
            return line

        async def recording_readline() -> bytes:
            line = await read_line()
            self._owner.record(session, line.decode("utf-8", "replace").rstrip("\r\n"))
            return line

        # Instance attributes shadow the methods: aiosmtpd reads every line through these two.
        reader.readuntil = recording_readuntil  # type: ignore[method-assign,assignment]
        reader.readline = recording_readline  # type: ignore[method-assign]


class _Controller(Controller):
    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), **kwargs)
        self._owner = owner

    def factory(self) -> SMTP:
        return _RecordingSMTP(self._owner, self.handler, **self.SMTP_kwargs)


@dataclass
class SmtpServer:
    """An aiosmtpd Controller (its own thread and loop) with a transcript of what clients sent."""

    host: str = SMTP_HOST
    port: int = SMTP_PORT
    reject_ehlo: bool = False
    sessions: list[list[str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _controller: _Controller | None = field(default=None, repr=False)

    def start(self) -> SmtpServer:
        self._controller = _Controller(
            self, hostname=self.host, port=self.port, server_hostname="mail.mx-ok.test",
            ready_timeout=5.0,
        )
        self._controller.start()
        self.clear()  # drop the controller's own readiness connection
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- transcript ------------------------------------------------------------------------

    def new_session(self) -> int:
        with self._lock:
            self.sessions.append([])
            return len(self.sessions) - 1

    def record(self, session: int, line: str) -> None:
        with self._lock:
            if not self.sessions:
                self.sessions.append([])
            self.sessions[session].append(line)

    def clear(self) -> None:
        with self._lock:
            self.sessions.clear()

    @property
    def commands(self) -> list[str]:
        """Every line received, in order, across all connections."""
        with self._lock:
            return [line for s in self.sessions for line in s]

    def verbs(self) -> list[str]:
        """The command word of every line received, upper case (`EHLO`, `MAIL`, `RCPT`, ...)."""
        return [line.split(" ", 1)[0].split(":", 1)[0].upper() for line in self.commands]


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SmtpServer]:
    """The test mail exchanger on 127.53.1.25:2525, transcript cleared for each module."""
    with SmtpServer() as server:
        yield server
