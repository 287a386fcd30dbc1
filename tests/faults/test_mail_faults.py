"""Fault matrix, mail side (issue 8): hostile mail servers and hostile mail DNS data.

Cells, each a real server on 127.85.0.0/16 (tests/support/mailworld.py for the DNS: Knot behind
unbound), each recorded with tests/faults/report.py when $DOMAINWATCH_FAULT_REPORT is set:

- mail.smtp_banner_drip        an MX that drips its banner one byte a second (tarpit)
- mail.smtp_silent             an MX that accepts the connection and never says a word
- mail.smtp_1000_mx_stuck      1,000 MX hosts whose connects hang (a full accept backlog)
- mail.smtp_1000_mx_closed     1,000 MX hosts that refuse the connection
- mail.dns_1000_mx_dead        1,000 MX targets in a zone whose server never answers
- mail.dns_1000_mx_listed      1,000 MX targets that all resolve (CPU and lookups bounded)
- mail.dns_cname_loop          the MX target is a CNAME loop
- mail.exporter_under_attack   all of the above as contacts of a running exporter: the attacked
                               domain's check fails with a bounded reason, a good domain's
                               verdict is unaffected, a contact whose MX turns into a tarpit
                               keeps its last good value, scrapes answer in < 1 s, RSS bounded.

Each probe-level cell asserts the deadline: a probe ends within SMTP_PROBE_DEADLINE_FACTOR x
smtp_timeout, a mail-domain check within MAIL_CHECK_DEADLINE_FACTOR x dns.timeout, each with at
most its lookup budget, and a good probe run beside the attack is not slowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from exporter import mail
from exporter.config import DnsSettings, EmailSettings
from tests.faults.report import record, rss_mb
from tests.support.exporter_proc import ExporterProcess, Scrape
from tests.support.mailworld import (
    MAIL_HOST,
    SILENT_HOST,
    STUCK_HOST,
    SWITCH_HOST,
    TARPIT_HOST,
    MailWorld,
    mail_world,  # noqa: F401
)
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca
from tests.support.scenario import DomainEntry, write_exporter_config

SMTP_TIMEOUT = 0.5
DNS_TIMEOUT = 0.5
PROBE_DEADLINE = mail.SMTP_PROBE_DEADLINE_FACTOR * SMTP_TIMEOUT
CHECK_DEADLINE = mail.MAIL_CHECK_DEADLINE_FACTOR * DNS_TIMEOUT
SLACK = 0.5  # scheduling and teardown on a shared 2-core machine
EXPORTER_HOST = "127.85.0.80"
MAX_RSS_MB = 150.0


def _own_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- hostile SMTP servers


class HostileSmtp:
    """A TCP listener on `host:port` that plays a hostile mail exchanger.

    - `drip`: sends its banner one byte a second, for as long as the client stays;
    - `silent`: accepts, reads whatever comes, never answers;
    - `switch`: an honest server (250 to everything) for its first session, `drip` after;
    - `stuck`: never accepts, and its accept backlog is filled at start, so connects hang.
    """

    def __init__(self, host: str, port: int, mode: str) -> None:
        self.mode = mode
        self.sessions = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        if mode == "stuck":
            self.sock.listen(0)
            filler = socket.create_connection((host, port), timeout=1.0)
            self._conns.append(filler)  # the one slot of the backlog, never accepted
            return
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self._spawn(self._accept_loop)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _peer = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.sessions += 1
            self._conns.append(conn)
            mode = self.mode
            if mode == "switch":
                mode = "honest" if self.sessions == 1 else "drip"
            self._spawn(getattr(self, f"_{mode}"), conn)

    def _drip(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for byte in b"220 tarpit.faults.test ESMTP at your service\r\n":
                conn.sendall(bytes([byte]))
                if self._stop.wait(1.0):
                    return

    def _silent(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                if not conn.recv(4096):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def _honest(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn.makefile("rwb") as f:
            f.write(b"220 switch.faults.test ESMTP\r\n")
            f.flush()
            for line in f:
                verb = line[:4].upper()
                f.write(b"221 bye\r\n" if verb == b"QUIT" else b"250 2.1.5 ok\r\n")
                f.flush()
                if verb == b"QUIT":
                    return

    def stop(self) -> None:
        self._stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()
        for thread in self._threads:
            thread.join(timeout=2)


class _GoodHandler:
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        return "250 2.1.5 OK" if address.startswith("ok@") else "550 5.1.1 User unknown"


class MailServers:
    """The honest MX (aiosmtpd on 127.85.1.25) and the hostile ones, all on one port, since
    the exporter has a single `email.smtp_port`."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind((MAIL_HOST, 0))
            self.port = int(probe.getsockname()[1])
        self.good = Controller(_GoodHandler(), hostname=MAIL_HOST, port=self.port)
        self.good.start()
        self.hostile = {
            "drip": HostileSmtp(TARPIT_HOST, self.port, "drip"),
            "silent": HostileSmtp(SILENT_HOST, self.port, "silent"),
            "switch": HostileSmtp(SWITCH_HOST, self.port, "switch"),
            "stuck": HostileSmtp(STUCK_HOST, self.port, "stuck"),
        }

    def stop(self) -> None:
        for server in self.hostile.values():
            server.stop()
        self.good.stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[MailServers]:
    s = MailServers()
    yield s
    s.stop()


# --------------------------------------------------------------------------- probe-level cells


def _email(servers: MailServers) -> EmailSettings:
    return EmailSettings(
        allow_private_addresses=True, smtp_probe=True, smtp_port=servers.port,
        smtp_timeout=SMTP_TIMEOUT,
    )


def _dns(world: MailWorld) -> DnsSettings:
    return world.settings(timeout=DNS_TIMEOUT)


async def _timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


def _probe_beside_a_good_one(
    world: MailWorld, servers: MailServers, address: str, hosts: tuple[str, ...]
) -> tuple[mail.ProbeResult, float, float, int]:
    """Run the hostile probe and, at the same time, an honest one: (hostile result, its
    seconds, the honest probe's seconds, the hostile probe's lookups)."""
    lookups: list[str] = []

    async def both() -> tuple[tuple[Any, float], tuple[Any, float]]:
        hostile = _timed(mail.probe_mailbox(
            address, hosts, _dns(world), _email(servers), on_query=lookups.append
        ))
        good = _timed(mail.probe_mailbox(
            "ok@eu.corp.test", ("mail.eu.corp.test",), _dns(world), _email(servers)
        ))
        return await asyncio.gather(hostile, good)

    (result, seconds), (good, good_seconds) = asyncio.run(both())
    assert good.accepted is True, good  # the honest server's answer is not disturbed...
    assert good_seconds < 0.5, good_seconds  # ...nor delayed by the attack beside it
    return result, seconds, good_seconds, len(lookups)


@pytest.mark.parametrize(
    ("cell", "kind", "host"),
    [
        ("mail.smtp_banner_drip", "drip", "mail.tarpit.faults.test"),
        ("mail.smtp_silent", "silent", "mail.silent.faults.test"),
    ],
)
def test_tarpit_probe_is_unknown_within_its_timeout(
    mail_world: MailWorld, servers: MailServers, cell: str, kind: str, host: str  # noqa: F811
) -> None:
    before = servers.hostile[kind].sessions
    result, seconds, _good, _lookups = _probe_beside_a_good_one(
        mail_world, servers, f"x@{host.split('.', 1)[1]}", (host,)
    )
    ok = result.accepted is None and result.reason == "timeout" and seconds < SMTP_TIMEOUT + SLACK
    record(cell, result.reason, seconds, _own_rss_mb(), ok)
    assert (result.accepted, result.reason, result.host) == (None, "timeout", host)
    assert SMTP_TIMEOUT - 0.05 <= seconds < SMTP_TIMEOUT + SLACK, seconds
    assert servers.hostile[kind].sessions == before + 1  # one session, then the answer stands


def test_thousand_stuck_mx_hosts_end_at_the_probe_deadline(
    mail_world: MailWorld, servers: MailServers  # noqa: F811
) -> None:
    hosts = tuple(f"h{i:04d}.stuck.faults.test" for i in range(1, 1001))
    result, seconds, _good, lookups = _probe_beside_a_good_one(
        mail_world, servers, "x@many-stuck.faults.test", hosts
    )
    ok = result.accepted is None and seconds < PROBE_DEADLINE + SLACK
    record("mail.smtp_1000_mx_stuck", result.reason, seconds, _own_rss_mb(), ok)
    # Host 1 times out on connect (smtp_timeout), host 2 gets what is left of the deadline.
    assert (result.accepted, result.reason) == (None, "deadline"), result
    assert PROBE_DEADLINE - 0.05 <= seconds < PROBE_DEADLINE + SLACK, seconds
    assert lookups <= mail.SMTP_QUERY_BUDGET


def test_thousand_closed_mx_hosts_are_tried_only_a_few(
    mail_world: MailWorld, servers: MailServers  # noqa: F811
) -> None:
    hosts = tuple(f"h{i:04d}.closed.faults.test" for i in range(1, 1001))
    result, seconds, _good, lookups = _probe_beside_a_good_one(
        mail_world, servers, "x@many-closed.faults.test", hosts
    )
    ok = result.reason == "connection_error" and lookups == 2 * mail.SMTP_MAX_HOSTS
    record("mail.smtp_1000_mx_closed", result.reason, seconds, _own_rss_mb(), ok)
    assert (result.accepted, result.reason) == (None, "connection_error"), result
    assert lookups == 2 * mail.SMTP_MAX_HOSTS  # A + AAAA of the first SMTP_MAX_HOSTS only
    assert result.host == f"h{mail.SMTP_MAX_HOSTS:04d}.closed.faults.test"
    assert seconds < 1.0


def _check(world: MailWorld, domain: str) -> tuple[mail.MailVerdict, float, list[str]]:
    outcomes: list[str] = []
    email = EmailSettings(allow_private_addresses=True)
    verdict, seconds = asyncio.run(
        _timed(mail.check_mail_domain(domain, _dns(world), email, outcomes.append))
    )
    return verdict, seconds, outcomes


def test_thousand_dead_mx_targets(mail_world: MailWorld) -> None:  # noqa: F811
    v, seconds, outcomes = _check(mail_world, "many-dead.faults.test")
    ok = v.deliverable is None and seconds < CHECK_DEADLINE + SLACK
    record("mail.dns_1000_mx_dead", v.reason, seconds, _own_rss_mb(), ok)
    # Unknown, never "undeliverable": the targets did not answer, they were not found missing.
    assert v.deliverable is None and v.reason in ("timeout", "servfail", "deadline"), v
    assert seconds < CHECK_DEADLINE + SLACK
    assert len(outcomes) <= mail.MAIL_CHECK_QUERY_BUDGET


def test_thousand_listed_mx_targets_cost_bounded_work(mail_world: MailWorld) -> None:  # noqa: F811
    v, seconds, outcomes = _check(mail_world, "many-closed.faults.test")
    ok = v.deliverable is True and seconds < 1.0
    record("mail.dns_1000_mx_listed", v.reason, seconds, _own_rss_mb(), ok)
    assert (v.deliverable, v.reason, len(v.mx_hosts)) == (True, "mx_ok", 10), v
    # MX + SOA + A/AAAA of the ten best targets; 1,000 names cost no quadratic CPU.
    assert len(outcomes) == 22
    assert seconds < 1.0, seconds


def test_cname_loop_mx_target(mail_world: MailWorld) -> None:  # noqa: F811
    v, seconds, outcomes = _check(mail_world, "loop.faults.test")
    ok = v.deliverable is None and seconds < CHECK_DEADLINE + SLACK
    record("mail.dns_cname_loop", v.reason, seconds, _own_rss_mb(), ok)
    assert v.deliverable is None and v.reason in ("servfail", "invalid_response"), v
    assert seconds < CHECK_DEADLINE + SLACK
    assert len(outcomes) <= mail.MAIL_CHECK_QUERY_BUDGET


# --------------------------------------------------------------------------- the exporter


class _Exporter(ExporterProcess):
    """The exporter subprocess, listening in our own loopback range."""

    @property
    def url(self) -> str:
        return f"http://{EXPORTER_HOST}:{self.port}"

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--web.listen-address") + 1] = f"{EXPORTER_HOST}:{self.port}"
        return cmd


HOSTILE_CONTACTS = (
    ("drip", "x@tarpit.faults.test"),
    ("silent", "x@silent.faults.test"),
    ("stuck", "x@many-stuck.faults.test"),
    ("deadmx", "x@many-dead.faults.test"),
    ("loop", "x@loop.faults.test"),
)


def _timed_scrape(ex: ExporterProcess) -> tuple[Scrape, float]:
    started = time.monotonic()
    s = ex.scrape()
    return s, time.monotonic() - started


def test_exporter_under_mail_attack(
    tmp_path: Path, mail_world: MailWorld, servers: MailServers  # noqa: F811
) -> None:
    ca = trustme.CA()
    with RdapServer(ca) as rdap:
        for name in ("corp.test", "watched.test", "faults.test"):
            rdap.set_domain(name, Reply(body=make_domain(
                name, None, ["active"], ["ns.corp.test"], "Example Registrar, Inc.", "1234",
            )))
        config = write_exporter_config(
            tmp_path / "config.yaml",
            rdap={
                "bootstrap": str(write_bootstrap(tmp_path / "bootstrap.json", {"test": rdap})),
                "ca_file": str(write_ca(ca, tmp_path / "ca.pem")),
                "allow_private_addresses": True,
                "requests_per_second": 50,
            },
            dns={"resolvers": list(_dns(mail_world).resolvers), "timeout": "500ms"},
            email={
                "interval": "2s",
                "smtp_probe": True,
                "smtp_port": servers.port,
                "smtp_timeout": "500ms",
                "smtp_interval": "1s",
                "allow_private_addresses": True,
            },
            domains=[
                DomainEntry("corp.test", contacts=(("registrant", "ok@ok.eu.corp.test"),)),
                DomainEntry("watched.test", contacts=HOSTILE_CONTACTS),
                DomainEntry("faults.test", contacts=(("registrant", "x@switch.faults.test"),)),
            ],
        )
        ex = _Exporter(config, tmp_path / "exporter")
        ex.start()
        try:
            _attack(ex, servers)
        finally:
            ex.stop()


def _attack(ex: ExporterProcess, servers: MailServers) -> None:
    started = time.monotonic()
    worst = 0.0
    seen: dict[str, float] = {}  # event -> seconds after start

    def email_success(s: Scrape, domain: str) -> float | None:
        return s.value("domain_check_success", domain=domain, check="email")

    def deliverable(s: Scrape, domain: str, role: str) -> float | None:
        return s.value("domain_contact_email_deliverable", domain=domain, role=role)

    # The switch MX answers honestly once; the pacer spaces probes of one host by 10 s, so its
    # tarpit is met on the second probe, about 10 s in.
    last: Scrape | None = None
    while time.monotonic() - started < 25.0:
        s, took = _timed_scrape(ex)
        worst, last = max(worst, took), s
        now = time.monotonic() - started
        if email_success(s, "corp.test") == 1 and deliverable(s, "corp.test", "registrant") == 1:
            seen.setdefault("good", now)
        if email_success(s, "watched.test") == 0:
            seen.setdefault("attacked_failed", now)
        if deliverable(s, "faults.test", "registrant") == 1:
            seen.setdefault("switch_good", now)
            if email_success(s, "faults.test") == 0:
                seen.setdefault("switch_kept", now)
        if {"good", "attacked_failed", "switch_kept"} <= seen.keys():
            break
        time.sleep(0.2)
    assert last is not None
    assert ex.proc is not None and ex.proc.poll() is None, "the exporter died"
    rss = rss_mb(ex.proc.pid)
    reasons = {
        lbl["reason"]
        for lbl, v in last.series("domain_check_error_info", domain="watched.test", check="email")
        if v == 1
    }
    zeros = [
        lbl for lbl, v in last.series("domain_contact_email_deliverable", domain="watched.test")
        if v == 0
    ]
    ok = (
        worst < 1.0 and {"good", "attacked_failed", "switch_kept"} <= seen.keys()
        and not zeros and rss < MAX_RSS_MB
    )
    record(
        "mail.exporter_under_attack",
        f"events {sorted(seen.items())}, reasons {sorted(reasons)}, zeros {len(zeros)}",
        worst, rss, ok,
    )
    assert worst < 1.0, f"slowest scrape {worst:.2f}s during the attack"
    assert "good" in seen and seen["good"] < 10.0, (seen, ex.log_tail(30))
    assert "attacked_failed" in seen, (seen, ex.log_tail(30))
    assert reasons and reasons <= {"smtp_unknown", "timeout", "servfail", "deadline"}, reasons
    assert not zeros, f"hostile mail servers made contacts undeliverable: {zeros}"
    # The contact whose MX turned into a tarpit keeps its last good value, marked stale.
    assert "switch_kept" in seen, (seen, ex.log_tail(30))
    assert servers.hostile["switch"].sessions >= 2
    assert rss < MAX_RSS_MB, rss
