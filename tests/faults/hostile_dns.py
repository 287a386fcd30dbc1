"""DNS servers of our own for the DNS verdict and fault tests (loopback range 127.84.0.0/16, ::1).

Two kinds, both real servers on port 53 (tests run as root):

- `HostileDns`: a small authoritative server in Python. Each address it listens on (UDP and TCP)
  has a *behaviour*: answer truthfully from zone text (`serve`), or misbehave the ways real
  networks and servers do — answer NXDOMAIN without AA to everything like an intercepting
  network (`intercept`), stay silent, answer with the wrong query ID or question, truncate over
  UDP and then never answer over TCP, refer sideways or upwards. It counts the queries each
  address received.
- `KnotLab`: a few `knotd` instances (one per set of listen addresses, because Knot has no views)
  for the truthful cases, e.g. two servers of one TLD that publish different versions of it.
  The pattern is the one of tests/support/dnsworld.py, on our own addresses.

`lab_lock(tag)` is an flock that keeps two test processes from binding the same fixed addresses.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from tests.support import knot

Transport = Literal["udp", "tcp"]
# A behaviour gets each query and returns the response to send, or None for silence (over
# TCP the connection is then held open without an answer).
Behaviour = Callable[[dns.message.Message, Transport], dns.message.Message | None]

_LOCK_WAIT = 300.0


@contextlib.contextmanager
def lab_lock(tag: str) -> Iterator[None]:
    """Hold /tmp/domainwatch-127.84-<tag>.lock: the addresses are fixed (port 53)."""
    path = Path(tempfile.gettempdir()) / f"domainwatch-127.84-{tag}.lock"
    fd = knot.acquire_flock(path, _LOCK_WAIT)
    try:
        yield
    finally:
        os.close(fd)


def zone_text(origin: str, body: str) -> str:
    """A zone file: SOA (5 s negative TTL) added, `body` one record per line, relative names
    allowed ("@" is the apex). The apex NS records must be in `body`."""
    apex = "." if origin == "." else origin.rstrip(".") + "."
    contact = "lab." if origin == "." else apex
    lines = [
        f"$ORIGIN {apex}",
        "$TTL 60",
        f"@ SOA ns.{contact} hostmaster.{contact} 2026112701 3600 600 86400 5",
    ]
    lines += [line.strip() for line in body.strip().splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


# --- the Python authoritative server -----------------------------------------------------------


class MiniZone:
    """Authoritative answers from one zone: answer, CNAME, NODATA, NXDOMAIN (all AA), or a
    referral (no AA, glue for NS targets inside the zone), like a plain authoritative server."""

    def __init__(self, origin: str, body: str) -> None:
        self.origin = dns.name.from_text(origin)
        self.zone = dns.zone.from_text(
            zone_text(origin, body), origin=self.origin, relativize=False
        )
        soa = self.zone.get_rdataset(self.origin, dns.rdatatype.SOA)
        assert soa is not None
        self.soa = dns.rrset.from_rdata_list(self.origin, soa.ttl, list(soa))
        self.names = set(self.zone.nodes)

    def respond(self, q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        qname, qtype = q.question[0].name, q.question[0].rdtype
        if not qname.is_subdomain(self.origin):
            r.set_rcode(dns.rcode.REFUSED)
            return r
        r.flags |= dns.flags.AA
        for depth in range(len(self.origin) + 1, len(qname) + 1):
            cut = qname.split(depth)[1]
            if cut == qname and qtype == dns.rdatatype.DS:
                break  # DS lives on the parent side of a cut: answered with AA (RFC 4035 3.1.4.1)
            ns = self.zone.get_rdataset(cut, dns.rdatatype.NS)
            if ns is not None:
                r.flags &= ~dns.flags.AA
                r.authority.append(dns.rrset.from_rdata_list(cut, ns.ttl, list(ns)))
                self._glue(r, [rr.target for rr in ns])
                return r
        node = self.zone.get_node(qname)
        if node is not None:
            for rdtype in (qtype, dns.rdatatype.CNAME):
                rds = node.get_rdataset(dns.rdataclass.IN, rdtype)
                if rds is not None:
                    r.answer.append(dns.rrset.from_rdata_list(qname, rds.ttl, list(rds)))
                    if rdtype == dns.rdatatype.NS:
                        self._glue(r, [rr.target for rr in rds])
                    return r
            r.authority.append(self.soa)  # NODATA
            return r
        if not any(n.is_subdomain(qname) for n in self.names):
            r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(self.soa)  # NXDOMAIN, or NODATA for an empty non-terminal
        return r

    def _glue(self, r: dns.message.Message, targets: Sequence[dns.name.Name]) -> None:
        for target in targets:
            if not target.is_subdomain(self.origin):
                continue
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                rds = self.zone.get_rdataset(target, rdtype)
                if rds is not None:
                    r.additional.append(dns.rrset.from_rdata_list(target, rds.ttl, list(rds)))


def serve(*zones: MiniZone) -> Behaviour:
    """Truthful: answer from the deepest zone that contains the name; REFUSED otherwise."""

    def behaviour(q: dns.message.Message, transport: Transport) -> dns.message.Message:
        qname = q.question[0].name
        fitting = [z for z in zones if qname.is_subdomain(z.origin)]
        if not fitting:
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.REFUSED)
            return r
        return max(fitting, key=lambda z: len(z.origin)).respond(q)

    return behaviour


def intercept() -> Behaviour:
    """A DNS-rewriting network: NXDOMAIN without AA (and with RA) for every query to anyone."""

    def behaviour(q: dns.message.Message, transport: Transport) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        r.set_rcode(dns.rcode.NXDOMAIN)
        return r

    return behaviour


def silent() -> Behaviour:
    def behaviour(q: dns.message.Message, transport: Transport) -> None:
        return None

    return behaviour


def wrong_id(inner: Behaviour) -> Behaviour:
    """Every response carries another query ID (a spoofer's guess, or a confused server)."""

    def behaviour(q: dns.message.Message, transport: Transport) -> dns.message.Message | None:
        r = inner(q, transport)
        if r is not None:
            r.id = (q.id + 1) % 65536
        return r

    return behaviour


def wrong_question(inner: Behaviour) -> Behaviour:
    """Every response has the right ID but a question for another name."""

    def behaviour(q: dns.message.Message, transport: Transport) -> dns.message.Message | None:
        r = inner(q, transport)
        if r is not None:
            r.question = [
                dns.rrset.RRset(
                    dns.name.from_text("elsewhere.invalid."),
                    dns.rdataclass.IN,
                    q.question[0].rdtype,
                )
            ]
        return r

    return behaviour


def truncate_then_hold() -> Behaviour:
    """TC=1 over UDP, then a TCP server that accepts and never answers."""

    def behaviour(q: dns.message.Message, transport: Transport) -> dns.message.Message | None:
        if transport == "tcp":
            return None
        r = dns.message.make_response(q)
        r.flags |= dns.flags.TC | dns.flags.AA
        return r

    return behaviour


def refer(cut: str, *targets: str) -> Behaviour:
    """A referral to `cut` (whatever was asked): sideways or upwards, a referral loop."""

    def behaviour(q: dns.message.Message, transport: Transport) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.authority.append(
            dns.rrset.from_text_list(cut, 60, "IN", "NS", list(targets))
        )
        return r

    return behaviour


def _wire(q: dns.message.Message, r: dns.message.Message, transport: Transport) -> bytes:
    if transport == "tcp":
        return r.to_wire(max_size=65535)
    limit = max(512, q.payload) if q.edns >= 0 else 512
    try:
        return r.to_wire(max_size=limit)
    except dns.exception.TooBig:
        tc = dns.message.make_response(q)
        tc.flags |= dns.flags.TC | (r.flags & dns.flags.AA)
        tc.set_rcode(r.rcode())
        return tc.to_wire()


@dataclass
class _Conn:
    sock: socket.socket
    local: str
    buffer: bytes = b""


@dataclass
class HostileDns:
    """Listens on port 53 of every address in `behaviours` (UDP and TCP), one thread."""

    behaviours: Mapping[str, Behaviour]
    port: int = 53
    queries: Counter[str] = field(default_factory=Counter)  # per listen address
    _sel: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    _socks: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> HostileDns:
        try:
            for address in self.behaviours:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                udp = socket.socket(family, socket.SOCK_DGRAM)
                tcp = socket.socket(family, socket.SOCK_STREAM)
                self._socks += [udp, tcp]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                udp.bind((address, self.port))
                tcp.bind((address, self.port))
                tcp.listen(64)
                for s in (udp, tcp):
                    s.setblocking(False)
                self._sel.register(udp, selectors.EVENT_READ, ("udp", address))
                self._sel.register(tcp, selectors.EVENT_READ, ("listen", address))
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._loop, name="hostile-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for key in list(self._sel.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        self._sel.close()

    def __enter__(self) -> HostileDns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, address: str) -> int:
        with self._lock:
            return self.queries[address]

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.05):
                kind, address = key.data if isinstance(key.data, tuple) else ("conn", "")
                try:
                    if kind == "udp":
                        self._udp(key.fileobj, address)  # type: ignore[arg-type]
                    elif kind == "listen":
                        conn, _peer = key.fileobj.accept()  # type: ignore[union-attr]
                        conn.setblocking(False)
                        self._sel.register(conn, selectors.EVENT_READ, _Conn(conn, address))
                    else:
                        self._tcp(key.data)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue

    def _answer(
        self, wire: bytes, address: str, transport: Transport
    ) -> tuple[dns.message.Message, dns.message.Message] | None:
        try:
            q = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not q.question:
            return None
        with self._lock:
            self.queries[address] += 1
        r = self.behaviours[address](q, transport)
        return None if r is None else (q, r)

    def _udp(self, sock: socket.socket, address: str) -> None:
        wire, peer = sock.recvfrom(65535)
        answer = self._answer(wire, address, "udp")
        if answer is not None:
            sock.sendto(_wire(answer[0], answer[1], "udp"), peer)

    def _tcp(self, conn: _Conn) -> None:
        data = conn.sock.recv(65535)
        if not data:
            self._sel.unregister(conn.sock)
            conn.sock.close()
            return
        conn.buffer += data
        while len(conn.buffer) >= 2:
            (size,) = struct.unpack("!H", conn.buffer[:2])
            if len(conn.buffer) < 2 + size:
                return
            wire, conn.buffer = conn.buffer[2 : 2 + size], conn.buffer[2 + size :]
            answer = self._answer(wire, conn.local, "tcp")
            if answer is None:
                continue  # hold the connection: the client waits for its own timeout
            out = _wire(answer[0], answer[1], "tcp")
            conn.sock.setblocking(True)
            conn.sock.settimeout(2.0)
            try:
                conn.sock.sendall(struct.pack("!H", len(out)) + out)
            finally:
                conn.sock.setblocking(False)


# --- Knot for the truthful cases ---------------------------------------------------------------


@dataclass(frozen=True)
class KnotServer:
    """One knotd: its listen addresses (IPv4 or "::1") and the zones it serves there; the same
    zone may have different contents on two servers (a TLD mid-update)."""

    name: str
    addresses: tuple[str, ...]
    zones: Mapping[str, str]  # origin -> body for zone_text()


def _knot_conf(server: KnotServer, rundir: Path) -> str:
    zones = [
        knot.zone_entry(origin, rundir / "zones" / (origin.strip(".") or "root"))
        for origin in server.zones
    ]
    return knot.knot_conf(rundir, server.addresses, zones)


@dataclass
class KnotLab:
    """Starts one knotd per `KnotServer` under `workdir`; stops exactly those (by pid)."""

    workdir: Path
    servers: Sequence[KnotServer]
    _procs: list[knot.Proc] = field(default_factory=list)

    def start(self, timeout: float = 15.0) -> KnotLab:
        if shutil.which("knotd") is None:
            raise RuntimeError("knotd not found on PATH (apt-get install knot)")
        try:
            for server in self.servers:
                rundir = self.workdir / f"knot-{server.name}"
                (rundir / "zones").mkdir(parents=True, exist_ok=True)
                for origin, body in server.zones.items():
                    path = rundir / "zones" / (origin.strip(".") or "root")
                    path.write_text(zone_text(origin, body))
                conf = _knot_conf(server, rundir)
                self._procs.append(knot.start_knotd(server.name, rundir, conf))
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        knot.stop(self._procs)

    def __enter__(self) -> KnotLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, timeout: float) -> None:
        pending = [(origin, a) for s in self.servers for origin in s.zones for a in s.addresses]
        deadline = time.monotonic() + timeout
        while pending:
            knot.check_alive(self._procs)
            origin, address = pending[0]
            q = dns.message.make_query(origin, "SOA")
            q.flags &= ~dns.flags.RD
            try:
                r = dns.query.udp(q, address, timeout=0.3)
                if r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA:
                    pending.pop(0)
                    continue
            except (dns.exception.DNSException, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not serve {origin} within {timeout}s")
            time.sleep(0.02)
