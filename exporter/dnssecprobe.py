"""DNSSEC probe: the parent's DS for a domain, and what the servers it delegates to sign and serve.

`check_dnssec(domain, settings)` walks referrals (from the root servers, or from the zone cut a
configured recursive resolver reports) to the parent zone, asks the parent's servers directly
(RD=0) for the domain's NS set (the referral, with its glue) and its DS RRset, then asks every
address of every server the PARENT delegates to for the apex SOA, NS and DNSKEY RRsets with the
DO bit, and the child's own A/AAAA of in-domain nameserver names. The verdicts are the pure
functions of `exporter.dnssec`. It never raises for network failures: a failure is data in
`DnssecProbe.error`, and anything not measured is None, never a made-up value.

Only authoritative answers are facts (issue 7): the DS answer, or its absence (NODATA, with the
parent zone's SOA and its NSEC/NSEC3 proof when the parent is signed), counts only with the AA
bit from a server of the parent zone; a non-AA answer tries the parent's next server, and when
none answers authoritatively the check fails `not_authoritative` and `signed` stays unknown. A
child server's SOA/NS/DNSKEY and in-domain A/AAAA answers count only with AA too.

Bounds, per check (the same shape as the delegation probe, exporter/nameservers.py):
- Wall clock: DEADLINE_FACTOR x dns.timeout (12 s with the default 3 s). The walk asks a zone's
  servers one after another over UDP; the DS question and the child probes run in parallel, each
  child question over UDP and, after a UDP timeout, once over TCP (2 x timeout); the in-domain
  A/AAAA questions follow. Beyond the deadline the check fails `deadline` and keeps what it
  measured.
- Messages: QUERY_BUDGET (every UDP or TCP message counts), then `query_budget`. A healthy
  domain costs 2 messages at the parent, 3 per child address, 2 per in-domain nameserver name,
  plus the walk (0-3 with a warm zone-cut cache) and the lookups of out-of-zone NS names.
- Servers: at most MAX_NS names of the delegation are probed (sorted order).

With a shared `zonecache.ZoneCache` (the delegation check's), the walk starts from the deepest
cached zone cut above the domain and refers later walks to the cuts it learns; the domain's own
referral and DS are always asked (they are the measurement).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from exporter import dnsquery, dnssec
from exporter.config import DnsSettings, split_host_port
from exporter.dnsquery import NO_ROUTE_ERRNOS, QueryOutcome, ns_targets, rcode_reason, worst
from exporter.nameservers import IANA_ROOT_SERVERS, CheckError, ServerKind
from exporter.zonecache import CachedServer, ZoneCache

log = logging.getLogger(__name__)

DEADLINE_FACTOR = 4.0
# Messages per check: 8 dual-stack nameservers outside the zone (3 per address, 2 lookups
# each) and a cold walk fit; a pathological delegation stops here.
QUERY_BUDGET = 120
MAX_NS = 16  # nameserver names of the delegation probed; the delegation check uses the same cap
_MAX_STEPS = 10  # referral steps in one walk
_MAX_DEPTH = 4  # nested lookups of NS names without glue
_MAX_IN_FLIGHT = 16
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
# The apex RRsets whose signatures `domain_dnssec_signature_expiry_timestamp_seconds` covers.
APEX_TYPES = (dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.DNSKEY)

# CheckError and ServerKind are the delegation check's (exporter.nameservers): one failure
# vocabulary and one set of server kinds in the metrics of both checks.
_Server = tuple[str, int]
T = TypeVar("T")


@dataclass(frozen=True)
class ServerView:
    """What one address of one delegated nameserver answered (None: not measured)."""

    nameserver: str
    address: str
    serial: int | None = None  # apex SOA serial from an authoritative answer
    expiration: int | None = None  # earliest RRSIG expiration on its apex SOA, NS, DNSKEY
    ds_mismatch: bool | None = None  # chain_verdict on the DNSKEY RRset it served
    failure: str | None = None  # why a question got no authoritative answer

    @property
    def label(self) -> str:
        return f"{self.nameserver} ({self.address})"


@dataclass(frozen=True)
class DnssecProbe:
    parent_zone: str | None = None
    delegated: bool | None = None  # False: the parent says authoritatively there is no cut
    signed: bool | None = None  # the parent publishes DS (True) / answers NODATA (False)
    ds: tuple[str, ...] = ()  # the DS records, as text
    ds_mismatch: bool | None = None
    signature_expiry: int | None = None  # Unix time; only for a signed domain
    serial_drift: int | None = None
    glue_mismatch: Mapping[str, bool] = field(default_factory=dict)  # in-domain NS -> verdict
    servers: tuple[ServerView, ...] = ()
    queries: int = 0
    error: CheckError | None = None

    @property
    def mismatched(self) -> tuple[str, ...]:
        return tuple(v.label for v in self.servers if v.ds_mismatch)


def check_deadline(settings: DnsSettings) -> float:
    return DEADLINE_FACTOR * settings.timeout


async def check_dnssec(
    domain: str,
    settings: DnsSettings,
    *,
    on_query_kind: Callable[[str, str], None] | None = None,
    cache: ZoneCache | None = None,
) -> DnssecProbe:
    """Measure the DNSSEC chain, glue and SOA serials of `domain` (see the module docstring).
    `on_query_kind(outcome, server_kind)` is called once per DNS message sent."""
    return await _Probe(domain, settings, on_query_kind, cache).run()


class _Stopped(Exception):
    """The query budget ran out: no further message may be sent."""


@dataclass
class _Ns:
    """One server of a zone: its name (None for configured addresses) and its addresses
    (None: not known yet, looked up when needed)."""

    name: dns.name.Name | None
    addresses: tuple[_Server, ...] | None


@dataclass
class _Step:
    kind: Literal["answer", "nxdomain", "referral"]
    response: dns.message.Message
    zone: dns.name.Name = dns.name.root
    cut: dns.name.Name | None = None
    servers: list[_Ns] = field(default_factory=list)
    glue: dict[dns.name.Name, dict[int, tuple[str, ...]]] = field(default_factory=dict)
    ttl: float = 0.0


@dataclass
class _Child:
    """Raw answers of one child address, judged once the DS answer is in."""

    nameserver: str
    address: str
    serial: int | None = None
    signatures: list[dnssec.RRSIG] = field(default_factory=list)  # on SOA, NS and DNSKEY
    dnskeys: list[dnssec.DNSKEY] | None = None  # None: no authoritative DNSKEY answer
    failure: str | None = None


class _Probe:
    def __init__(
        self,
        domain: str,
        settings: DnsSettings,
        on_query_kind: Callable[[str, str], None] | None,
        cache: ZoneCache | None,
    ) -> None:
        self.domain = dns.name.from_text(domain)
        self.timeout = settings.timeout
        self.deadline = check_deadline(settings)
        self.on_query_kind = on_query_kind
        self.resolvers = tuple(_server(s) for s in settings.resolvers)
        roots = tuple(_server(s) for s in settings.root_servers or IANA_ROOT_SERVERS)
        # In resolver mode the parent and its servers are the resolver's word: nothing shared.
        self.shared = cache if not self.resolvers else None
        if self.shared is not None:
            self.shared.bind(roots)
        self.cuts: dict[dns.name.Name, list[_Ns]] = {dns.name.root: [_Ns(None, roots)]}
        self.addresses: dict[tuple[dns.name.Name, int], tuple[_Server, ...]] = {}
        self.silent: set[_Server] = set()
        self.sem = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self.sent = 0
        self.stopped = False
        self.exhausted = False
        # What was measured so far: a deadline or budget stop returns exactly this.
        self.parent_zone: dns.name.Name | None = None
        self.delegated: bool | None = None
        self.signed: bool | None = None
        self.ds: list[dnssec.DS] = []
        self.children: list[_Child] = []
        self.glue: dict[str, bool] = {}

    # -- the check under its deadline and budget ---------------------------------------------

    async def run(self) -> DnssecProbe:
        error: CheckError | None
        try:
            async with asyncio.timeout(self.deadline):
                error = await self._measure()
        except TimeoutError:
            self.stopped = True
            error = "deadline"
        except _Stopped:
            error = "query_budget"
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            # An unusable name or record the per-query handling did not anticipate: still a
            # failed check, never an exception for the scheduler.
            log.debug("dnssec check for %s failed: %s", self.domain, exc)
            error = "invalid_response"
        return self._result(error)

    async def _measure(self) -> CheckError | None:
        if self.resolvers:
            start = await self._parent_via_resolver()
            if isinstance(start, str):
                return start
        step = await self._iterate(self.domain, dns.rdatatype.NS, stop_at_cut=True, chain=())
        if isinstance(step, str):
            return _check_error(step)
        self.parent_zone = step.zone
        if step.kind == "nxdomain" or not _ns_names(step, self.domain):
            self.delegated = False  # authoritative NXDOMAIN or NODATA: nothing to judge
            return None
        self.delegated = True
        ds_error, probed = await asyncio.gather(
            self._ask_ds(step.zone), self._probe_children(step), return_exceptions=True
        )
        for outcome in (ds_error, probed):
            if isinstance(outcome, BaseException):
                raise outcome
        if self.exhausted:
            raise _Stopped
        assert not isinstance(ds_error, BaseException)
        await self._check_glue(step)
        return ds_error or self._children_error()

    def _result(self, error: CheckError | None) -> DnssecProbe:
        views = tuple(self._judge(c) for c in self.children)
        signed = self.signed
        verdicts = [v.ds_mismatch for v in views if v.ds_mismatch is not None]
        mismatch = (True in verdicts) if verdicts and signed else None
        expirations = [v.expiration for v in views if v.expiration is not None]
        return DnssecProbe(
            parent_zone=_text(self.parent_zone) if self.parent_zone is not None else None,
            delegated=self.delegated,
            signed=signed,
            ds=tuple(ds.to_text() for ds in self.ds),
            ds_mismatch=mismatch,
            # An unsigned domain's signatures matter to no validator: not exported.
            signature_expiry=min(expirations) if expirations and signed else None,
            serial_drift=dnssec.serial_drift(v.serial for v in views if v.serial is not None),
            glue_mismatch=dict(self.glue),
            servers=views,
            queries=self.sent,
            error=error,
        )

    def _judge(self, child: _Child) -> ServerView:
        mismatch = None
        if self.signed and child.dnskeys is not None:
            mismatch = dnssec.chain_verdict(
                self.domain,
                self.ds,
                child.dnskeys,
                [s for s in child.signatures if s.type_covered == dns.rdatatype.DNSKEY],
            )
        return ServerView(
            nameserver=child.nameserver,
            address=child.address,
            serial=child.serial,
            expiration=dnssec.earliest_expiration(child.signatures),
            ds_mismatch=mismatch,
            failure=child.failure,
        )

    def _children_error(self) -> CheckError | None:
        if any(c.serial is not None for c in self.children):
            return None
        failures = {c.failure for c in self.children}
        if failures and failures <= {"no_route"}:
            return "no_route"
        return "unreachable"

    # -- the parent side -----------------------------------------------------------------------

    async def _ask_ds(self, zone: dns.name.Name) -> CheckError | None:
        """The DS RRset (or its authoritative absence) from a server of the parent zone."""

        def accept(response: dns.message.Message) -> list[dnssec.DS] | str:
            rcode = response.rcode()
            if rcode != dns.rcode.NOERROR:
                return "not_authoritative" if rcode == dns.rcode.NXDOMAIN else rcode_reason(rcode)
            if not response.flags & dns.flags.AA:
                return "not_authoritative"
            for rrset in response.answer:
                if rrset.name == self.domain and rrset.rdtype == dns.rdatatype.DS:
                    return [rr for rr in rrset if isinstance(rr, dnssec.DS)]
            # NODATA must come from the parent zone itself (its SOA), not from a server that
            # answered from the child's apex.
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return [] if rrset.name == zone else "not_authoritative"
            return "not_authoritative"

        found = await self._ask_zone(zone, self.domain, dns.rdatatype.DS, (), accept, dnssec=True)
        if isinstance(found, str):
            log.debug("dnssec check for %s: no DS answer: %s", self.domain, found)
            return _check_error(found)
        self.signed = bool(found)
        self.ds = found
        return None

    async def _parent_via_resolver(self) -> CheckError | None:
        """The zone cut above the domain and its servers, as the recursive resolver sees them."""
        name = self.domain.parent() if self.domain != dns.name.root else self.domain
        zone: dns.name.Name | None = None
        while zone is None:
            response = await self._recursive(name, dns.rdatatype.SOA)
            if isinstance(response, str):
                return _check_error(response)
            zone = dnsquery.soa_zone(response, name)
            if zone is None:
                if name == dns.name.root:
                    return "not_authoritative"  # even the root "does not exist": made up
                name = name.parent()
        response = await self._recursive(zone, dns.rdatatype.NS)
        if isinstance(response, str):
            return _check_error(response)
        names = ns_targets(response.answer, zone)
        if not names:
            return "no_parent"
        self.cuts = {zone: [_Ns(n, None) for n in names]}
        return None

    # -- the child side ------------------------------------------------------------------------

    async def _probe_children(self, step: _Step) -> None:
        names = sorted(_ns_names(step, self.domain))[:MAX_NS]
        results = await asyncio.gather(
            *(self._probe_child(name, step) for name in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, _Stopped):
                continue  # `exhausted` is checked by the caller
            if isinstance(result, dns.exception.DNSException | OSError | ValueError):
                log.debug("dnssec check for %s: server %s: %s", self.domain, name, result)
            elif isinstance(result, BaseException):
                raise result

    async def _probe_child(self, name: dns.name.Name, step: _Step) -> None:
        glue = step.glue.get(name)
        if glue is not None:
            addresses = tuple((a, 53) for t in _ADDRESS_TYPES for a in glue.get(int(t), ()))
        else:
            addresses = ()
            for rdtype in _ADDRESS_TYPES:
                addresses += await self._lookup(name, rdtype, chain=(name,))
        if not addresses:
            self.children.append(_Child(_text(name), "-", failure="no_address"))
            return
        await asyncio.gather(*(self._probe_address(name, a) for a in addresses))

    async def _probe_address(self, name: dns.name.Name, address: _Server) -> None:
        child = _Child(_text(name), address[0])
        self.children.append(child)  # partial results count when the deadline stops the check
        replies = await asyncio.gather(
            *(
                self._send(self.domain, t, address, kind="child", dnssec=True, tcp_retry=True)
                for t in APEX_TYPES
            )
        )
        for rdtype, reply in zip(APEX_TYPES, replies, strict=True):
            if isinstance(reply, str):
                child.failure = child.failure or reply
                continue
            why = _authoritative(reply)
            if why is not None:
                child.failure = child.failure or why
                continue
            child.signatures += [
                sig
                for rrset in reply.answer
                if rrset.name == self.domain
                and rrset.rdtype == dns.rdatatype.RRSIG
                and rrset.covers == rdtype
                for sig in rrset
                if isinstance(sig, dnssec.RRSIG)
            ]
            found = [
                rr
                for rrset in reply.answer
                if rrset.name == self.domain and rrset.rdtype == rdtype
                for rr in rrset
            ]
            if rdtype == dns.rdatatype.SOA and found:
                child.serial = int(getattr(found[0], "serial", 0))
            elif rdtype == dns.rdatatype.DNSKEY:
                child.dnskeys = [k for k in found if isinstance(k, dnssec.DNSKEY)]
        if child.failure is not None:
            log.debug(
                "dnssec check for %s: %s (%s): %s", self.domain, name, address[0], child.failure
            )

    async def _check_glue(self, step: _Step) -> None:
        """Glue for in-domain nameserver names vs what the child's servers answer for them."""
        if step.kind != "referral":
            return  # the parent answered from the child zone itself: no referral, no glue
        healthy = sorted(
            ((c.nameserver, c.address) for c in self.children if c.serial is not None),
        )
        servers = [(a, 53) for _n, a in healthy]
        for name in sorted(_ns_names(step, self.domain))[:MAX_NS]:
            if not name.is_subdomain(self.domain):
                continue  # out of the domain: the child's word is not the authority for it
            glue = step.glue.get(name, {})
            child = await self._child_addresses(name, servers)
            verdict = dnssec.glue_mismatch(
                glue.get(int(dns.rdatatype.A), ()),
                glue.get(int(dns.rdatatype.AAAA), ()),
                child.get(int(dns.rdatatype.A)),
                child.get(int(dns.rdatatype.AAAA)),
            )
            if verdict is not None:
                self.glue[_text(name)] = verdict

    async def _child_addresses(
        self, name: dns.name.Name, servers: list[_Server]
    ) -> dict[int, tuple[str, ...] | None]:
        """The A and AAAA sets the child answers authoritatively for `name` (None: no
        authoritative answer from any of `servers`)."""
        out: dict[int, tuple[str, ...] | None] = {}
        for rdtype in _ADDRESS_TYPES:
            out[int(rdtype)] = None
            for server in servers:
                reply = await self._send(name, rdtype, server, kind="child", tcp_retry=False)
                if isinstance(reply, str):
                    continue
                if reply.rcode() == dns.rcode.NXDOMAIN and reply.flags & dns.flags.AA:
                    out[int(rdtype)] = ()
                    break
                if _authoritative(reply) is not None:
                    continue
                out[int(rdtype)] = tuple(
                    sorted(
                        rr.to_text()
                        for rrset in reply.answer
                        if rrset.name == name and rrset.rdtype == rdtype
                        for rr in rrset
                    )
                )
                break
        return out

    # -- walking referrals ---------------------------------------------------------------------

    async def _iterate(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        *,
        stop_at_cut: bool,
        chain: tuple[dns.name.Name, ...],
    ) -> _Step | str:
        """Follow referrals from the deepest known cut above `qname` to an authoritative answer;
        with `stop_at_cut`, stop at the referral for `qname` itself (the parent side)."""
        zone = self._closest_cut(
            qname.parent() if stop_at_cut and qname != dns.name.root else qname
        )
        for _ in range(_MAX_STEPS):

            def accept(response: dns.message.Message, zone: dns.name.Name = zone) -> _Step | str:
                return _classify(response, zone, qname)

            step = await self._ask_zone(zone, qname, rdtype, chain, accept)
            if isinstance(step, str):
                return step
            step.zone = zone
            if step.kind != "referral" or (stop_at_cut and step.cut == qname):
                return step
            assert step.cut is not None
            self.cuts[step.cut] = step.servers
            if self.shared is not None:
                self.shared.put_cut(
                    step.cut,
                    tuple(
                        CachedServer(s.name, tuple(s.addresses) if s.addresses else None)
                        for s in step.servers
                    ),
                    step.ttl,
                )
            zone = step.cut
        return "invalid_response"

    def _closest_cut(self, name: dns.name.Name) -> dns.name.Name:
        if self.resolvers:  # resolver mode knows one cut: the parent zone
            return next(iter(self.cuts))
        while True:
            if name in self.cuts:
                return name
            cached = self.shared.cut(name) if self.shared is not None else None
            if cached is not None:
                self.cuts[name] = [_Ns(s.name, s.addresses) for s in cached]
                return name
            name = name.parent()

    async def _ask_zone(
        self,
        zone: dns.name.Name,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        chain: tuple[dns.name.Name, ...],
        accept: Callable[[dns.message.Message], T | str],
        *,
        dnssec: bool = False,
    ) -> T | str:
        """Ask the servers of `zone` one after another until `accept` takes a response; else the
        most telling reason why none was usable."""
        reasons: list[str] = []
        kind = self._zone_kind(zone)
        servers = self.cuts.get(zone, [])
        # Servers with known addresses first (no lookup), then by name; the shared cache's
        # turn rotates the first one so that a zone's servers share the load.
        ordered = sorted(servers, key=lambda s: str(s.name))
        if self.shared is not None and len(ordered) > 1:
            start = self.shared.turn(zone, len(ordered))
            ordered = ordered[start:] + ordered[:start]
        ordered.sort(key=lambda s: s.addresses is None)
        for entry in ordered[:MAX_NS]:
            address = await self._address_of(entry, chain)
            if isinstance(address, str):
                reasons.append(address)
                continue
            if address in self.silent:
                reasons.append("timeout")
                continue
            reply = await self._send(qname, rdtype, address, kind=kind, dnssec=dnssec)
            if isinstance(reply, str):
                reasons.append(reply)
                if reply == "timeout":
                    self.silent.add(address)
                    if self.shared is not None:
                        self.shared.timed_out(address)
                continue
            if self.shared is not None:
                self.shared.answered(address)  # ends a back-off the delegation check started
            result = accept(reply)
            if isinstance(result, str):
                reasons.append(result)
                continue
            return result
        return worst(reasons)

    def _zone_kind(self, zone: dns.name.Name) -> ServerKind:
        if zone == dns.name.root:
            return "root"
        if len(zone) == 2:
            return "tld"
        if zone != self.domain and self.domain.is_subdomain(zone):
            return "parent"
        return "child"

    async def _address_of(self, entry: _Ns, chain: tuple[dns.name.Name, ...]) -> _Server | str:
        """The address to ask a zone's server at (IPv4 first)."""
        if entry.addresses is None:
            assert entry.name is not None
            if entry.name in chain or len(chain) > _MAX_DEPTH:
                return "no_address"  # a glueless delegation that depends on itself
            found: tuple[_Server, ...] = ()
            for rdtype in _ADDRESS_TYPES:
                found += await self._lookup(entry.name, rdtype, chain=(*chain, entry.name))
                if found:
                    break
            entry.addresses = found
        return entry.addresses[0] if entry.addresses else "no_address"

    async def _lookup(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, chain: tuple[dns.name.Name, ...]
    ) -> tuple[_Server, ...]:
        """Addresses of one type for `name` from an authoritative answer (or the resolver's);
        () when there are none or the lookup failed."""
        key = (name, int(rdtype))
        if key in self.addresses:
            return self.addresses[key]
        cached = self.shared.addresses(name, rdtype) if self.shared is not None else None
        if cached is not None:
            self.addresses[key] = cached
            return cached
        found: tuple[_Server, ...] = ()
        if len(chain) <= _MAX_DEPTH:
            if self.resolvers:
                response = await self._recursive(name, rdtype)
            else:
                step = await self._iterate(name, rdtype, stop_at_cut=False, chain=chain)
                response = step.response if isinstance(step, _Step) else "failed"
            if not isinstance(response, str):
                found = tuple(
                    (rr.to_text(), 53)
                    for rrset in response.answer
                    if rrset.name == name and rrset.rdtype == rdtype
                    for rr in rrset
                )
        self.addresses[key] = found
        return found

    async def _recursive(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message | str:
        """One RD=1 question to the configured resolvers, the next one on failure."""
        reasons: list[str] = []
        for server in sorted(self.resolvers, key=lambda s: s in self.silent):
            reply = await self._send(qname, rdtype, server, kind="resolver", rd=True)
            if isinstance(reply, str):
                reasons.append(reply)
                if reply == "timeout":
                    self.silent.add(server)
                continue
            if reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return reply
            reasons.append(rcode_reason(reply.rcode()))
        return worst(reasons)

    # -- one DNS message -----------------------------------------------------------------------

    async def _send(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        server: _Server,
        *,
        kind: ServerKind,
        dnssec: bool = False,
        tcp_retry: bool = False,
        rd: bool = False,
    ) -> dns.message.Message | str:
        """One question to one server: UDP (TCP on TC=1), with `tcp_retry` one TCP try after a
        UDP timeout, one retry without EDNS after FORMERR. A failure is returned as its reason:
        timeout, no_route (this host cannot reach that address family) or error."""
        host, port = server

        async def transport(q: dns.message.Message, tcp: bool) -> dns.message.Message:
            return await self._message(q, host, port, tcp=tcp, kind=kind)

        try:
            return await dnsquery.ask(
                transport, qname, rdtype, rd=rd, tcp_retry=tcp_retry, dnssec=dnssec
            )
        except dns.exception.Timeout:
            return "timeout"
        except OSError as exc:
            if exc.errno in NO_ROUTE_ERRNOS:
                return "no_route"
            return "timeout" if tcp_retry else "error"
        except (dns.exception.DNSException, EOFError, ValueError) as exc:
            log.debug("dnssec check for %s: %s at %s: %s", self.domain, qname, host, exc)
            return "error"

    async def _message(
        self, q: dns.message.Message, host: str, port: int, *, tcp: bool, kind: ServerKind
    ) -> dns.message.Message:
        async with self.sem:
            if self.sent >= QUERY_BUDGET:
                self.stopped = self.exhausted = True
            if self.stopped:
                raise _Stopped
            self.sent += 1
            return await dnsquery.exchange(
                q, host, port, tcp=tcp, wait=self.timeout, report=partial(self._count, kind)
            )

    def _count(self, kind: ServerKind, outcome: QueryOutcome) -> None:
        if self.on_query_kind is not None:
            self.on_query_kind(outcome, kind)


# -- pure helpers ------------------------------------------------------------------------------


def _server(text: str) -> _Server:
    return split_host_port(text, 53)


def _text(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _ns_names(step: _Step, domain: dns.name.Name) -> list[dns.name.Name]:
    """The NS names of `domain` in a referral (authority) or an authoritative answer."""
    if step.kind == "referral":
        return [s.name for s in step.servers if s.name is not None]
    return ns_targets(step.response.answer, domain)


def _classify(
    response: dns.message.Message, zone: dns.name.Name, qname: dns.name.Name
) -> _Step | str:
    """One response on the way down: an authoritative answer or NXDOMAIN, a referral further
    down towards `qname`, or why it is unusable."""
    rcode = response.rcode()
    authoritative = bool(response.flags & dns.flags.AA)
    if rcode == dns.rcode.NXDOMAIN:
        # Without AA a NXDOMAIN is hearsay (an intercepting network): never evidence.
        return _Step("nxdomain", response) if authoritative else "not_authoritative"
    if rcode != dns.rcode.NOERROR:
        return rcode_reason(rcode)
    if authoritative:
        return _Step("answer", response)
    for rrset in response.authority:
        if rrset.rdtype != dns.rdatatype.NS:
            continue
        cut = rrset.name
        # Down from the zone asked and towards the name wanted; anything else (an upward or
        # sideways referral) is a broken server.
        if cut != zone and cut.is_subdomain(zone) and qname.is_subdomain(cut):
            glue = _glue(response, zone)
            targets = sorted({rr.target for rr in rrset})
            servers = [
                _Ns(t, tuple((a, 53) for ty in _ADDRESS_TYPES for a in glue[t].get(int(ty), ())))
                if t in glue
                else _Ns(t, None)
                for t in targets
            ]
            ttls = [rrset.ttl] + [
                g.ttl for g in response.additional if g.name in glue and g.rdtype in _ADDRESS_TYPES
            ]
            return _Step("referral", response, cut=cut, servers=servers, glue=glue, ttl=min(ttls))
        return "referral"
    return "not_authoritative"


def _glue(
    response: dns.message.Message, zone: dns.name.Name
) -> dict[dns.name.Name, dict[int, tuple[str, ...]]]:
    """A/AAAA records of the additional section for names inside `zone` (its bailiwick)."""
    glue: dict[dns.name.Name, dict[int, tuple[str, ...]]] = {}
    for rrset in response.additional:
        if rrset.rdtype in _ADDRESS_TYPES and rrset.name.is_subdomain(zone):
            types = glue.setdefault(rrset.name, {})
            types[int(rrset.rdtype)] = tuple(
                sorted({*types.get(int(rrset.rdtype), ()), *(rr.to_text() for rr in rrset)})
            )
    return glue


def _authoritative(response: dns.message.Message) -> str | None:
    """None for an authoritative NOERROR answer, else why it is not one."""
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain"
    if rcode != dns.rcode.NOERROR:
        return rcode_reason(rcode)
    if not response.flags & dns.flags.AA:
        return "not_authoritative"
    return None


_CHECK_ERRORS: Mapping[str, CheckError] = {
    "timeout": "timeout",
    "servfail": "servfail",
    "refused": "refused",
    "not_authoritative": "not_authoritative",
    "no_route": "no_route",
    "no_address": "no_parent",
    "no_parent": "no_parent",
}


def _check_error(reason: str) -> CheckError:
    return _CHECK_ERRORS.get(reason, "invalid_response")
