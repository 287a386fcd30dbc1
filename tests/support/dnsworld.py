"""A real DNS hierarchy on loopback for tests: Knot DNS authoritative servers plus one unbound.

Everything listens on port 53 of addresses in 127.53.0.0/16 (tests run as root; any 127.x
address can be bound without configuring `lo`). Knot has no views, so every address set that
must serve a different set of zones is its own `knotd` with its own rundir, storage and control
socket. Zone files are generated from the `ZONES` dict below at start-up.

Servers (``SERVERS``)::

    root       127.53.0.1              .            (NS a.root.test)
    tld-test   127.53.0.2              test.        (NS ns.test)
    co-test    127.53.0.3              co.test.     (NS ns.co.test): a two-label public suffix
    tld-zz     127.53.0.4              zz.          (NS ns.zz)
    provider   127.53.1.1, 127.53.1.2  provider.test, good.test, lame.test, childdiff.test,
                                       shop.co.test, good.zz, the mail domains, the editable
                                       domains and its own (stale) copy of migrated.test
    other      127.53.1.3              childdiff.test only (so it is REFUSED for lame.test)
    parking    127.53.2.1, 127.53.2.2  parking.zz, parked.test, migrated.test
    (nothing)  127.53.9.1-3            dead addresses: queries time out
    unbound    127.53.0.53             recursive resolver whose root hints point at 127.53.0.1

Domains (the names are a contract; other test modules rely on them)::

    good.test       NS ns1.good.test, ns2.good.test (glue 127.53.1.1/.2); child agrees (AA).
                    MX 10 mail.good.test (A 127.53.1.28); A 127.53.1.80.
    parked.test     parent NS ns1.parking.zz, ns2.parking.zz (the "parking" server, which
                    serves parked.test with that same NS set). The *expected*/registry set in
                    tests is ns1.good.test, ns2.good.test, so this is the NS-mismatch case.
    lame.test       NS ns1.provider.test (serves it), ns3.provider.test (127.53.1.3, REFUSED).
    dead.test       NS ns-dead1.provider.test / ns-dead2.provider.test -> 127.53.9.1/.2: nothing
                    listens, every child query times out.
    childdiff.test  parent NS ns1+ns2.provider.test; child apex NS adds ns3.provider.test.
    shop.co.test    in co.test, NS ns1+ns2.provider.test, consistent.
    good.zz         under the second TLD, NS ns1+ns2.provider.test, consistent.
    mx-ok.test      MX 10 mail.mx-ok.test, A 127.53.1.25.
    null-mx.test    MX 0 . (RFC 7505 null MX).
    a-only.test     no MX, apex A 127.53.1.26.
    mx-broken.test  MX 10 mail.nowhere.test; nowhere.test does not exist (NXDOMAIN).
    held-mail.test  MX 10 mail.held-mail.test, A 127.53.1.27 (its RDAP record is "on hold").
    slow-mail.test  delegated to ns1.slow-mail.test with glue 127.53.9.3 (dead): the resolver
                    times out / SERVFAILs.
    big.test        parent NS ns1+ns2.provider.test; the child's apex NS set adds 30 long names
                    (`BIG_EXTRA_NS`), so the UDP answer is truncated (TC=1) and needs TCP.
    orphan.test     NS ns1.provider.test + ns9.gone.test; gone.test does not exist, so that
                    server has no address (a hijackable NS name).
    nxdomain.test   does NOT exist; nor does any name in `ABSENT_NAMES`.
    migrated.test   a provider migration: the parent delegates to ns1+ns2.parking.zz (which serve
                    it with that apex NS set), while the OLD provider servers still serve their
                    own copy whose apex lists ns1+ns2.provider.test (`SERVER_ZONES`). A registry
                    still listing the provider names is stale; probing them would add those
                    names to the child view.
    flip.test, flip-nons.test, swap.test, flap.test
                    like good.zz (NS ns1+ns2.provider.test, consistent), for tests that edit
                    their delegation while the world runs (`set_delegation`). Only the test
                    module that owns an edit may rely on its state; `reset_zone` undoes it.
    provider.test   ns1/ns2/ns3.provider.test -> 127.53.1.1/.2/.3,
                    ns-dead1/ns-dead2.provider.test -> 127.53.9.1/.2.
    parking.zz      ns1/ns2.parking.zz -> 127.53.2.1/.2.

Use from a test module::

    from tests.support.dnsworld import dns_world  # noqa: F401

    def test_x(dns_world: DnsWorld) -> None:
        settings = dns_world.settings(mode="root", timeout=0.5)
        answer = dns_world.resolve("mx-ok.test", "MX")

The addresses are fixed, so a world holds an flock on `LOCK_FILE` while it runs: a second test
process on the same machine waits for the first to finish instead of failing to bind. Every
module that imports `dns_world` shares one world per pytest process (reference-counted), and the
servers get SIGTERM if pytest itself dies (PR_SET_PDEATHSIG).

To extend the world, add records to `ZONES` (relative names, one record per line) and, for a
new zone, list it under a server in `SERVERS` and add its delegation to the parent zone. A server
that must serve a zone with other contents than the others (a stale copy) gets an entry in
`SERVER_ZONES`.

Editing while the world runs (each edit bumps the SOA serial and reloads every knotd that serves
the zone, and returns once each of their addresses answers with the new serial)::

    dns_world.set_delegation("test", "flip", None)                      # parent: NXDOMAIN
    dns_world.set_delegation("test", "swap", ["ns1.provider.test."])   # new NS set
    dns_world.set_zone("flip.test", "...")                              # whole zone body
    dns_world.reset_zone("test")                                        # back to `ZONES`

The world is shared by every module of one pytest process: a module that edits a zone must
reset it when it is done (its fixture's teardown).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from exporter.config import DnsSettings
from tests.support import knot

ROOT_SERVER = "127.53.0.1"
RESOLVER = "127.53.0.53"
DEAD_ADDRESSES = ("127.53.9.1", "127.53.9.2", "127.53.9.3")


@dataclass(frozen=True)
class Server:
    """One knotd instance: the addresses it listens on and the zones it serves on all of them."""

    name: str
    addresses: tuple[str, ...]
    zones: tuple[str, ...]


SERVERS: tuple[Server, ...] = (
    Server("root", ("127.53.0.1",), (".",)),
    Server("tld-test", ("127.53.0.2",), ("test",)),
    Server("co-test", ("127.53.0.3",), ("co.test",)),
    Server("tld-zz", ("127.53.0.4",), ("zz",)),
    Server(
        "provider",
        ("127.53.1.1", "127.53.1.2"),
        (
            "provider.test", "good.test", "lame.test", "childdiff.test", "shop.co.test",
            "good.zz", "mx-ok.test", "null-mx.test", "a-only.test", "mx-broken.test",
            "held-mail.test", "big.test", "orphan.test",
            # Added for the issue-7 verdict tests (tests/test_verdicts_e2e.py).
            "migrated.test", "flip.test", "flip-nons.test", "swap.test", "flap.test",
        ),
    ),
    Server("other", ("127.53.1.3",), ("childdiff.test",)),
    Server(
        "parking", ("127.53.2.1", "127.53.2.2"), ("parking.zz", "parked.test", "migrated.test")
    ),
)

# Zone contents without SOA (added automatically). Names are relative to the zone origin unless
# they end in a dot; "@" is the apex.
_PROVIDER_NS = """
@ NS ns1.provider.test.
@ NS ns2.provider.test.
"""

# Enough long NS names to push big.test's apex NS answer past 1232 bytes.
BIG_EXTRA_NS = tuple(
    # A distinct long label in each name defeats name compression.
    f"ns.big-hosting-nameserver-{i:02d}-with-a-deliberately-long-label.zz" for i in range(1, 31)
)

ZONES: dict[str, str] = {
    ".": """
@ NS a.root.test.
a.root.test. A 127.53.0.1
test. NS ns.test.
ns.test. A 127.53.0.2
zz. NS ns.zz.
ns.zz. A 127.53.0.4
""",
    "test": """
@ NS ns.test.
ns A 127.53.0.2
a.root A 127.53.0.1
co NS ns.co
ns.co A 127.53.0.3
provider NS ns1.provider
provider NS ns2.provider
ns1.provider A 127.53.1.1
ns2.provider A 127.53.1.2
good NS ns1.good
good NS ns2.good
ns1.good A 127.53.1.1
ns2.good A 127.53.1.2
parked NS ns1.parking.zz.
parked NS ns2.parking.zz.
lame NS ns1.provider
lame NS ns3.provider
dead NS ns-dead1.provider
dead NS ns-dead2.provider
childdiff NS ns1.provider
childdiff NS ns2.provider
mx-ok NS ns1.provider
mx-ok NS ns2.provider
null-mx NS ns1.provider
null-mx NS ns2.provider
a-only NS ns1.provider
a-only NS ns2.provider
mx-broken NS ns1.provider
mx-broken NS ns2.provider
held-mail NS ns1.provider
held-mail NS ns2.provider
slow-mail NS ns1.slow-mail
ns1.slow-mail A 127.53.9.3
big NS ns1.provider
big NS ns2.provider
orphan NS ns1.provider
orphan NS ns9.gone
migrated NS ns1.parking.zz.
migrated NS ns2.parking.zz.
flip NS ns1.provider
flip NS ns2.provider
flip-nons NS ns1.provider
flip-nons NS ns2.provider
swap NS ns1.provider
swap NS ns2.provider
flap NS ns1.provider
flap NS ns2.provider
""",
    "co.test": """
@ NS ns.co.test.
ns A 127.53.0.3
shop NS ns1.provider.test.
shop NS ns2.provider.test.
""",
    "zz": """
@ NS ns.zz.
ns A 127.53.0.4
parking NS ns1.parking
parking NS ns2.parking
ns1.parking A 127.53.2.1
ns2.parking A 127.53.2.2
good NS ns1.provider.test.
good NS ns2.provider.test.
""",
    "provider.test": _PROVIDER_NS + """
ns1 A 127.53.1.1
ns2 A 127.53.1.2
ns3 A 127.53.1.3
ns-dead1 A 127.53.9.1
ns-dead2 A 127.53.9.2
""",
    "good.test": """
@ NS ns1.good.test.
@ NS ns2.good.test.
ns1 A 127.53.1.1
ns2 A 127.53.1.2
@ A 127.53.1.80
www A 127.53.1.80
@ MX 10 mail.good.test.
mail A 127.53.1.28
""",
    "lame.test": """
@ NS ns1.provider.test.
@ NS ns3.provider.test.
@ A 127.53.1.81
""",
    "childdiff.test": _PROVIDER_NS + """
@ NS ns3.provider.test.
@ A 127.53.1.82
""",
    "shop.co.test": _PROVIDER_NS + """
@ A 127.53.1.83
""",
    "good.zz": _PROVIDER_NS + """
@ A 127.53.1.84
""",
    "parking.zz": """
@ NS ns1.parking.zz.
@ NS ns2.parking.zz.
ns1 A 127.53.2.1
ns2 A 127.53.2.2
""",
    "parked.test": """
@ NS ns1.parking.zz.
@ NS ns2.parking.zz.
@ A 127.53.2.80
www A 127.53.2.80
""",
    "mx-ok.test": _PROVIDER_NS + """
@ MX 10 mail.mx-ok.test.
mail A 127.53.1.25
""",
    "null-mx.test": _PROVIDER_NS + """
@ MX 0 .
""",
    "a-only.test": _PROVIDER_NS + """
@ A 127.53.1.26
""",
    "mx-broken.test": _PROVIDER_NS + """
@ MX 10 mail.nowhere.test.
""",
    "held-mail.test": _PROVIDER_NS + """
@ MX 10 mail.held-mail.test.
mail A 127.53.1.27
""",
    "big.test": _PROVIDER_NS + "".join(f"@ NS {name}.\n" for name in BIG_EXTRA_NS),
    "orphan.test": """
@ NS ns1.provider.test.
@ NS ns9.gone.test.
""",
    # The new provider's zone (the parking servers); the old provider's copy is in SERVER_ZONES.
    "migrated.test": """
@ NS ns1.parking.zz.
@ NS ns2.parking.zz.
@ A 127.53.2.81
""",
    "flip.test": _PROVIDER_NS + """
@ A 127.53.1.85
""",
    "flip-nons.test": _PROVIDER_NS + """
@ A 127.53.1.86
""",
    "swap.test": _PROVIDER_NS + """
@ A 127.53.1.87
""",
    "flap.test": _PROVIDER_NS + """
@ A 127.53.1.88
""",
}

# (server name, zone) -> contents that this server serves instead of `ZONES[zone]`.
SERVER_ZONES: dict[tuple[str, str], str] = {
    # The old provider still serves migrated.test with its own names at the apex.
    ("provider", "migrated.test"): _PROVIDER_NS + """
@ A 127.53.1.89
""",
}

# Names every consumer may rely on, grouped by purpose.
CONSISTENT_DOMAINS = ("good.test", "shop.co.test", "good.zz")
GOOD_NS = ("ns1.good.test", "ns2.good.test")
PROVIDER_NS = ("ns1.provider.test", "ns2.provider.test")
PARKING_NS = ("ns1.parking.zz", "ns2.parking.zz")
# Names under test. that never exist (the parent answers an authoritative NXDOMAIN).
ABSENT_NAMES = (
    "nxdomain.test", "pulled.test", "vanished.test", "autorenew.test", "mixup.test",
    "unheard-of.test",
)
# Zones that tests edit while the world runs (see `DnsWorld.set_delegation`).
EDITABLE_DOMAINS = ("flip.test", "flip-nons.test", "swap.test", "flap.test")

_START_DEADLINE = 15.0
# The addresses are fixed, so two test processes on one machine (two developers' runs, or a
# helper's run next to yours) cannot both hold a world: the second waits for this lock.
LOCK_FILE = Path(tempfile.gettempdir()) / "domainwatch-dnsworld-127.53.lock"
_LOCK_WAIT = 300.0


BASE_SERIAL = 2026112301


def _zone_text(origin: str, body: str, serial: int = BASE_SERIAL) -> str:
    apex = "." if origin == "." else origin + "."
    contact = "root.test." if origin == "." else apex
    lines = [
        f"$ORIGIN {apex}",
        "$TTL 60",
        # A 5 s negative TTL so that no test depends on what an earlier one got as NXDOMAIN.
        f"@ SOA ns.{contact} hostmaster.{contact} {serial} 3600 600 86400 5",
    ]
    lines += [line.strip() for line in body.strip().splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


def _zone_file_name(origin: str) -> str:
    return "root.zone" if origin == "." else f"{origin}.zone"


def _server_zone_file_name(server: str, origin: str) -> str:
    """The file of a zone whose contents on this server differ (`SERVER_ZONES`)."""
    return f"{server}--{_zone_file_name(origin)}"


def _knot_conf(
    server: Server,
    rundir: Path,
    zonedir: Path,
    own: Iterable[str] = (),
) -> str:
    """`own`: the zones this server serves from its own file (`_server_zone_file_name`)."""
    mine = set(own)

    def file_of(z: str) -> Path:
        return zonedir / (_server_zone_file_name(server.name, z) if z in mine else
                          _zone_file_name(z))

    zones = [knot.zone_entry(z, file_of(z)) for z in server.zones]
    return knot.knot_conf(rundir, server.addresses, zones, zone_storage=zonedir)


def _unbound_conf(workdir: Path, hints: Path) -> str:
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
    root-hints: "{hints}"
    do-not-query-localhost: no
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
    num-threads: 1
    # Tests must see changes quickly and never depend on what an earlier test cached.
    cache-max-ttl: 60
    cache-max-negative-ttl: 5
    infra-host-ttl: 60

remote-control:
    control-enable: no
"""


def _is_ns_of(line: str, label: str) -> bool:
    """Is this zone-body line an NS record owned by `label`?"""
    parts = line.split()
    return len(parts) >= 3 and parts[0].lower() == label.lower() and parts[1].upper() == "NS"


@dataclass
class DnsWorld:
    """Starts the knotd instances and unbound described in the module docstring.

    `DnsWorld(tmpdir).start()` ... `.stop()`, or use it as a context manager.
    """

    workdir: Path
    servers: tuple[Server, ...] = SERVERS
    zones: Mapping[str, str] = field(default_factory=lambda: dict(ZONES))
    server_zones: Mapping[tuple[str, str], str] = field(
        default_factory=lambda: dict(SERVER_ZONES)
    )
    root_server: str = ROOT_SERVER
    resolver: str = RESOLVER
    _procs: list[knot.Proc] = field(default_factory=list, init=False, repr=False)
    _lock: int | None = field(default=None, init=False, repr=False)
    # Live edits: the current body of every zone edited since start, and the serial counter.
    _live: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _serial: int = field(default=BASE_SERIAL, init=False, repr=False)
    _edit_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DnsWorld:
        for binary in ("knotd", "unbound"):
            if shutil.which(binary) is None:
                # CI installs both: a missing binary is an environment bug, never a skip.
                raise RuntimeError(f"{binary} not found on PATH (apt-get install knot unbound)")
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        zonedir = self.workdir / "zones"
        zonedir.mkdir(exist_ok=True)
        for origin, body in self.zones.items():
            (zonedir / _zone_file_name(origin)).write_text(_zone_text(origin, body))
        for (server_name, origin), body in self.server_zones.items():
            (zonedir / _server_zone_file_name(server_name, origin)).write_text(
                _zone_text(origin, body)
            )
        self._live.clear()
        self._serial = BASE_SERIAL
        try:
            for server in self.servers:
                rundir = self.workdir / f"knot-{server.name}"
                own = [z for (n, z) in self.server_zones if n == server.name]
                conf = _knot_conf(server, rundir, zonedir, own)
                self._procs.append(knot.start_knotd(server.name, rundir, conf))
            ubdir = self.workdir / "unbound"
            ubdir.mkdir(exist_ok=True)
            hints = ubdir / "root.hints"
            hints.write_text(". 3600 NS a.root.test.\na.root.test. 3600 A 127.53.0.1\n")
            ubconf = ubdir / "unbound.conf"
            ubconf.write_text(_unbound_conf(ubdir, hints))
            unbound = ["unbound", "-d", "-c", str(ubconf)]
            self._procs.append(knot.spawn("unbound", unbound, ubdir / "unbound.log"))
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop exactly the processes this world started (by pid), newest first."""
        knot.stop(self._procs)
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def _acquire_lock(self) -> None:
        if self._lock is not None:
            return
        self._lock = knot.acquire_flock(LOCK_FILE, _LOCK_WAIT)

    def __enter__(self) -> DnsWorld:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_alive(self) -> None:
        for proc in self._procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode} (is something else bound "
                    f"to its address?):\n{proc.log.read_text(errors='replace')}"
                )

    def _wait_ready(self) -> None:
        pending = [
            (zone, address)
            for server in self.servers
            for zone in server.zones
            for address in server.addresses
        ]
        deadline = time.monotonic() + _START_DEADLINE
        while pending:
            self._check_alive()
            zone, address = pending[0]
            response = self._try(zone, "SOA", address, rd=False)
            if (
                response is not None
                and response.rcode() == dns.rcode.NOERROR
                and response.flags & dns.flags.AA
            ):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not serve {zone} within {_START_DEADLINE}s")
            time.sleep(0.02)
        while True:
            self._check_alive()
            response = self._try("good.test", "NS", self.resolver, rd=True)
            if response is not None and response.rcode() == dns.rcode.NOERROR and response.answer:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"unbound at {self.resolver} did not resolve good.test")
            time.sleep(0.02)

    @staticmethod
    def _try(name: str, rdtype: str, address: str, *, rd: bool) -> dns.message.Message | None:
        try:
            return DnsWorld.query(name, rdtype, address, rd=rd, timeout=0.3)
        except (dns.exception.DNSException, OSError):
            return None

    # -- editing zones while the world runs ---------------------------------------------------

    def zone_body(self, origin: str) -> str:
        """The records (without SOA) a zone is served with now: `ZONES` or the last edit."""
        with self._edit_lock:
            return self._live.get(origin, self.zones[origin])

    def set_zone(self, origin: str, body: str, timeout: float = 5.0) -> None:
        """Serve `origin` with `body` from now on (the shared file; servers that have their
        own copy in `server_zones` keep it). Returns once every address serving the zone
        answers with the new serial, so the next query a test makes sees the edit."""
        with self._edit_lock:
            self._serial += 1
            serial = self._serial
            self._live[origin] = body
            path = self.workdir / "zones" / _zone_file_name(origin)
            path.write_text(_zone_text(origin, body, serial))
            servers = [
                s for s in self.servers
                if origin in s.zones and (s.name, origin) not in self.server_zones
            ]
            for server in servers:
                self._reload(server, origin)
            deadline = time.monotonic() + timeout
            for server in servers:
                for address in server.addresses:
                    self._wait_serial(origin, address, serial, deadline)

    def reset_zone(self, origin: str) -> None:
        """Undo every edit of `origin` (back to `ZONES`); a no-op for an unedited zone."""
        with self._edit_lock:
            edited = origin in self._live
        if edited:
            self.set_zone(origin, self.zones[origin])
            with self._edit_lock:
                self._live.pop(origin, None)

    def reset_all(self) -> None:
        with self._edit_lock:
            edited = list(self._live)
        for origin in edited:
            self.reset_zone(origin)

    def set_delegation(
        self, parent: str, label: str, nameservers: Sequence[str] | None
    ) -> None:
        """Replace the NS records of `label` (relative to `parent`) in the parent zone; None
        removes the delegation, so the parent answers NXDOMAIN for the name. Names in
        `nameservers` are written as given (end them with a dot for absolute names); glue
        records are left alone."""
        kept = [
            line for line in self.zone_body(parent).splitlines()
            if not _is_ns_of(line, label)
        ]
        kept += [f"{label} NS {ns}" for ns in nameservers or ()]
        self.set_zone(parent, "\n".join(kept) + "\n")

    def _reload(self, server: Server, origin: str) -> None:
        sock = self.workdir / f"knot-{server.name}" / "knot.sock"
        zone = "." if origin == "." else origin + "."
        done = subprocess.run(
            ["knotc", "-s", str(sock), "-t", "5", "zone-reload", zone],
            capture_output=True, text=True, timeout=10,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"knotc zone-reload {zone} on {server.name} failed ({done.returncode}): "
                f"{done.stdout}{done.stderr}"
            )

    def _wait_serial(self, origin: str, address: str, serial: int, deadline: float) -> None:
        name = "." if origin == "." else origin
        while True:
            response = self._try(name, "SOA", address, rd=False)
            if response is not None and response.answer:
                for rrset in response.answer:
                    for rdata in rrset:
                        if getattr(rdata, "serial", None) == serial:
                            return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not load serial {serial} of {origin}")
            time.sleep(0.01)

    # -- helpers for tests -------------------------------------------------------------------

    @property
    def root_servers(self) -> tuple[str, ...]:
        return (self.root_server,)

    @staticmethod
    def query(
        name: str, rdtype: str, server: str, *, rd: bool = False, timeout: float = 1.0
    ) -> dns.message.Message:
        """One raw query (RD=0 by default) to `server` port 53; raises on timeout."""
        q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        if not rd:
            q.flags &= ~dns.flags.RD
        response, _ = dns.query.udp_with_fallback(q, server, timeout=timeout)
        return response

    def stub(self, timeout: float = 1.0) -> dns.resolver.Resolver:
        """A dnspython stub resolver that asks this world's unbound (never /etc/resolv.conf)."""
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.resolver]
        r.port = 53
        r.timeout = timeout
        r.lifetime = timeout * 2
        r.cache = None
        return r

    def resolve(
        self, name: str, rdtype: str, *, timeout: float = 1.0
    ) -> dns.resolver.Answer:
        """Recursive lookup through unbound; raises dnspython's NXDOMAIN/NoAnswer/Timeout."""
        return self.stub(timeout).resolve(name, rdtype, search=False)

    def settings(
        self, mode: Literal["root", "resolver"] = "root", timeout: float = 0.5
    ) -> DnsSettings:
        """DnsSettings for the exporter: walk from this world's root, or ask its unbound."""
        if mode == "root":
            return DnsSettings(root_servers=self.root_servers, timeout=timeout)
        return DnsSettings(
            resolvers=(self.resolver,), root_servers=self.root_servers, timeout=timeout
        )


# One world per pytest process: every module that imports `dns_world` gets its own FixtureDef,
# but they must share the servers (two worlds would fight over the same addresses).
_shared: DnsWorld | None = None
_users = 0


@contextlib.contextmanager
def shared_world(base: Path | None = None) -> Iterator[DnsWorld]:
    """Reference-counted access to the process-wide world; the last user stops it."""
    global _shared, _users
    if _shared is None:
        workdir = base if base is not None else Path(tempfile.mkdtemp(prefix="dnsworld-"))
        _shared = DnsWorld(workdir).start()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.stop()
            _shared = None


@pytest.fixture(scope="session")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsWorld]:
    """The running DNS world (see the module docstring for its names and addresses)."""
    with shared_world(tmp_path_factory.mktemp("dnsworld")) as world:
        yield world
