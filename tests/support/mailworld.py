"""A small DNS world on 127.85.0.0/16 for the mail tests: Knot DNS authoritative servers and an
unbound that resolves them, with a real delegated sub-zone and hostile mail data.

Servers (all port 53)::

    parent     127.85.0.1   corp.test, watched.test, faults.test
    child      127.85.0.2   eu.corp.test (delegated from corp.test: a sub-zone, no registration)
    unbound    127.85.0.53  recursive; stub zones for the three parent zones -> 127.85.0.1, so
                            eu.corp.test is reached through the parent's referral (a real cut)
    (nothing)  127.85.9.9   dead: dead.faults.test is delegated there, every query times out

Names (the contract the tests rely on)::

    corp.test           registrable domain; MX 10 mail.corp.test (127.85.1.25)
    eu.corp.test        delegated sub-zone; MX 10 mail.eu.corp.test (127.85.1.25), and one
                        mail domain per SMTP test mailbox kind: <kind>.eu.corp.test with its own
                        MX host mx-<kind>.eu.corp.test (127.85.1.25), so per-host SMTP pacing
                        never serialises tests
    watched.test        a monitored domain with NS ns.corp.test
    faults.test         many-dead   MX to 1,000 hosts h0001..h1000.dead.faults.test (time out)
                        many-closed MX to 1,000 hosts h0001..h1000.closed.faults.test, which a
                                    wildcard points at 127.85.3.1 (nothing listens: refused)
                        many-stuck  MX to 1,000 hosts h0001..h1000.stuck.faults.test -> 127.85.3.2
                                    (a test's listener whose backlog is full: connects hang)
                        loop        MX 10 a.loop.faults.test; a.loop CNAME b.loop, b.loop CNAME
                                    a.loop (a CNAME loop)
                        tarpit      MX 10 mail.tarpit.faults.test -> 127.85.2.1
                        silent      MX 10 mail.silent.faults.test -> 127.85.2.2
                        switch      MX 10 mail.switch.faults.test -> 127.85.2.3

Use as a context manager or through the module-scoped `mail_world` fixture. The addresses are
fixed, so a world holds an flock on LOCK_FILE while it runs (a second pytest process waits).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from exporter.config import DnsSettings
from tests.support import knot

PARENT = "127.85.0.1"
CHILD = "127.85.0.2"
RESOLVER = "127.85.0.53"
DEAD = "127.85.9.9"
MAIL_HOST = "127.85.1.25"  # where a test's SMTP server listens (ephemeral port)
TARPIT_HOST = "127.85.2.1"
SILENT_HOST = "127.85.2.2"
SWITCH_HOST = "127.85.2.3"
CLOSED_HOST = "127.85.3.1"
STUCK_HOST = "127.85.3.2"
MANY = 1000
# Mail domains under the sub-zone, one per SMTP reply kind a test wants (see module docstring).
SMTP_KINDS = ("ok", "gone", "blocked", "policy", "listed", "nosuch", "bare", "full", "grey")

LOCK_FILE = Path(tempfile.gettempdir()) / "domainwatch-mailworld-127.85.lock"
_LOCK_WAIT = 120.0
_START_DEADLINE = 15.0


def _zones() -> dict[str, str]:
    many_dead = "\n".join(f"many-dead MX {i} h{i:04d}.dead" for i in range(1, MANY + 1))
    many_closed = "\n".join(f"many-closed MX {i} h{i:04d}.closed" for i in range(1, MANY + 1))
    many_stuck = "\n".join(f"many-stuck MX {i} h{i:04d}.stuck" for i in range(1, MANY + 1))
    sub = "\n".join(
        f"{kind} MX 10 mx-{kind}\nmx-{kind} A {MAIL_HOST}" for kind in SMTP_KINDS
    )
    return {
        "corp.test": f"""
@ NS ns.corp.test.
ns A {PARENT}
@ MX 10 mail
mail A {MAIL_HOST}
eu NS ns.eu
ns.eu A {CHILD}
""",
        "eu.corp.test": f"""
@ NS ns.eu.corp.test.
ns A {CHILD}
@ MX 10 mail
mail A {MAIL_HOST}
{sub}
""",
        "watched.test": f"""
@ NS ns.corp.test.
@ A {PARENT}
""",
        "faults.test": f"""
@ NS ns.corp.test.
dead NS ns.dead
ns.dead A {DEAD}
*.closed A {CLOSED_HOST}
*.stuck A {STUCK_HOST}
{many_dead}
{many_closed}
{many_stuck}
loop MX 10 a.loop
a.loop CNAME b.loop
b.loop CNAME a.loop
tarpit MX 10 mail.tarpit
mail.tarpit A {TARPIT_HOST}
silent MX 10 mail.silent
mail.silent A {SILENT_HOST}
switch MX 10 mail.switch
mail.switch A {SWITCH_HOST}
""",
    }


@dataclass(frozen=True)
class _Knot:
    name: str
    address: str
    zones: tuple[str, ...]


KNOTS = (
    _Knot("parent", PARENT, ("corp.test", "watched.test", "faults.test")),
    _Knot("child", CHILD, ("eu.corp.test",)),
)


def _zone_text(origin: str, body: str) -> str:
    apex = origin + "."
    head = [
        f"$ORIGIN {apex}",
        "$TTL 60",
        # A 5 s negative TTL so that no test depends on an earlier test's NXDOMAIN.
        f"@ SOA ns.corp.test. hostmaster.{apex} 2026112701 3600 600 86400 5",
    ]
    lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
    return "\n".join(head + lines) + "\n"


def _knot_conf(server: _Knot, rundir: Path, zonedir: Path) -> str:
    zones = [knot.zone_entry(z, zonedir / (z + ".zone")) for z in server.zones]
    return knot.knot_conf(rundir, (server.address,), zones, zone_storage=zonedir)


def _unbound_conf(workdir: Path) -> str:
    stubs = "".join(
        f'stub-zone:\n    name: "{zone}"\n    stub-addr: {PARENT}\n'
        for zone in KNOTS[0].zones
    )
    return f"""server:
    interface: {RESOLVER}
    port: 53
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{workdir}"
    pidfile: "{workdir}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 0
    root-hints: "{workdir}/root.hints"
    do-not-query-localhost: no
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
    num-threads: 1
    cache-max-ttl: 60
    cache-max-negative-ttl: 5
    infra-host-ttl: 60
remote-control:
    control-enable: no
{stubs}"""


@dataclass
class MailWorld:
    workdir: Path
    _procs: list[knot.Proc] = field(default_factory=list)
    _lock: int | None = None

    def settings(self, timeout: float = 0.5) -> DnsSettings:
        """DnsSettings that resolve through this world's unbound."""
        return DnsSettings(resolvers=(RESOLVER,), root_servers=(DEAD,), timeout=timeout)

    def start(self) -> MailWorld:
        for binary in ("knotd", "unbound"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} not found on PATH (apt-get install knot unbound)")
        self._acquire_lock()
        try:
            zonedir = self.workdir / "zones"
            zonedir.mkdir(parents=True, exist_ok=True)
            for origin, body in _zones().items():
                (zonedir / f"{origin}.zone").write_text(_zone_text(origin, body))
            for server in KNOTS:
                rundir = self.workdir / f"knot-{server.name}"
                conf = _knot_conf(server, rundir, zonedir)
                self._procs.append(knot.start_knotd(server.name, rundir, conf))
            ubdir = self.workdir / "unbound"
            ubdir.mkdir(exist_ok=True)
            # Names outside the stub zones go to a dead "root": they fail, never leave loopback.
            (ubdir / "root.hints").write_text(f". 3600 NS a.root.\na.root. 3600 A {DEAD}\n")
            (ubdir / "unbound.conf").write_text(_unbound_conf(ubdir))
            self._procs.append(
                knot.spawn(
                    "unbound", ["unbound", "-d", "-c", str(ubdir / "unbound.conf")],
                    ubdir / "unbound.log",
                )
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop exactly the processes this world started (by pid)."""
        knot.stop(self._procs)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> MailWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _acquire_lock(self) -> None:
        self._lock = knot.acquire_flock(LOCK_FILE, _LOCK_WAIT)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_DEADLINE
        pending = [(z, k.address, False) for k in KNOTS for z in k.zones]
        pending.append(("eu.corp.test", RESOLVER, True))  # through the referral
        while pending:
            knot.check_alive(self._procs)
            zone, address, recursive = pending[0]
            q = dns.message.make_query(zone, "SOA")
            if not recursive:
                q.flags &= ~dns.flags.RD
            try:
                r = dns.query.udp(q, address, timeout=0.3)
            except (dns.exception.DNSException, OSError):
                r = None
            if r is not None and r.rcode() == dns.rcode.NOERROR and r.answer:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not answer SOA {zone} in {_START_DEADLINE}s")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def mail_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailWorld]:
    """The running mail DNS world (see the module docstring for names and addresses)."""
    with MailWorld(tmp_path_factory.mktemp("mailworld")) as world:
        yield world
