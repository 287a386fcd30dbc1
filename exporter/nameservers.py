"""DNS delegation probe: what the parent zone publishes for a domain, and what its servers say.

`check_delegation(domain, settings)` finds the parent zone by following referrals (from the root
servers, or from the zone cut a configured recursive resolver reports), asks the parent's servers
directly with RD=0 for the domain's NS set, then asks every delegated server directly for the
apex NS set (design doc B1-B3). It never raises for network failures: a failure is data in
`Delegation.error`, and an unmeasured set is `None`, never an empty set.

`nameserver_mismatch(parent, expected, registry, child)` is the pure comparison (B4).

Every name this module returns is a lower-case A-label without trailing dot.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from exporter.config import DnsSettings, split_host_port
from exporter.names import normalise_host

log = logging.getLogger(__name__)

# IANA root hints, IPv4 (b.root-servers.net renumbered in 2023); used when
# dns.root_servers is empty.
IANA_ROOT_SERVERS: tuple[str, ...] = (
    "198.41.0.4",
    "170.247.170.2",
    "192.33.4.12",
    "199.7.91.13",
    "192.203.230.10",
    "192.5.5.241",
    "192.112.36.4",
    "198.97.190.53",
    "192.36.148.17",
    "192.58.128.30",
    "193.0.14.129",
    "199.7.83.42",
    "202.12.27.33",
)

LameReason = Literal[
    "timeout", "refused", "servfail", "not_authoritative", "nxdomain", "no_address", "referral"
]
CheckError = Literal[
    "timeout", "servfail", "refused", "no_parent", "unreachable", "invalid_response"
]
QueryOutcome = Literal["success", "nxdomain", "timeout", "servfail", "refused", "error"]

_EDNS_PAYLOAD = 1232
# Concurrent DNS messages in flight for one check; the scheduler bounds checks across domains.
_MAX_IN_FLIGHT = 8
# Referral steps in one walk (root -> TLD -> suffix -> ... ); real chains are 2-4 deep.
_MAX_STEPS = 10
# Nesting of "resolve the address of an out-of-bailiwick NS name" inside another walk.
_MAX_DEPTH = 4
_MAX_CNAMES = 4

_Server = tuple[str, int]  # (address, port)
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass(frozen=True)
class Delegation:
    """The measured delegation of one domain. `None` always means "not measured"."""

    parent_zone: str | None  # "test", "co.test", "." for a TLD; None when not found
    parent: tuple[str, ...] | None  # NS names in the parent's referral, sorted
    delegated: bool | None  # False when the parent answered NXDOMAIN (or has no cut there)
    child: tuple[str, ...] | None  # union of apex NS sets from authoritative child answers
    child_sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    lame: Mapping[str, LameReason | None] = field(default_factory=dict)  # None = healthy
    queries: int = 0
    error: CheckError | None = None

    @property
    def child_sets_differ(self) -> bool:
        """Zonemaster CONSISTENCY04: two authoritative servers answered different NS sets."""
        return len(set(self.child_sets.values())) > 1

    @property
    def lame_servers(self) -> tuple[str, ...]:
        return tuple(sorted(ns for ns, reason in self.lame.items() if reason is not None))

    def mismatch(
        self, expected: Iterable[str] | None, registry: Iterable[str] | None
    ) -> bool | None:
        """`nameserver_mismatch` for this measurement; None whenever the check failed.

        A failed check (`error` set, e.g. "unreachable" with the parent set still known) yields
        no verdict: the failure is reported as such, never as a mismatch or an all-clear.
        """
        if self.error is not None:
            return None
        return nameserver_mismatch(self.parent, expected, registry, self.child)


def nameserver_mismatch(
    parent: Iterable[str] | None,
    expected: Iterable[str] | None,
    registry: Iterable[str] | None,
    child: Iterable[str] | None,
) -> bool | None:
    """True when the parent's set differs from expected (if non-empty), registry or child.

    None when the parent delegation was not measured: a DNS failure is never a mismatch.
    Names are compared after normalisation, so case, order and a trailing dot do not matter.
    """
    if parent is None:
        return None
    p = _name_set(parent)
    if expected is not None:
        e = _name_set(expected)
        if e and e != p:
            return True
    if registry is not None and _name_set(registry) != p:
        return True
    return child is not None and _name_set(child) != p


def _name_set(names: Iterable[str]) -> frozenset[str]:
    return frozenset(_display(n) for n in names)


def _display(name: str | dns.name.Name) -> str:
    text = name.to_text(omit_final_dot=True) if isinstance(name, dns.name.Name) else name
    if text in (".", ""):
        return "."
    return normalise_host(text) or text.rstrip(".").lower()


async def check_delegation(
    domain: str,
    settings: DnsSettings,
    *,
    extra_names: Iterable[str] = (),
    on_query: Callable[[str], None] | None = None,
) -> Delegation:
    """Measure the delegation of `domain` (parent referral, child apex NS, lame servers).

    `extra_names` are NS names from config or RDAP that are queried as child servers too.
    `on_query(outcome)` is called once per DNS message sent (outcome: success, nxdomain,
    timeout, servfail, refused, error).
    """
    probe: _Probe | None = None
    try:
        probe = _Probe(domain, settings, on_query)
        return await probe.run(extra_names)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        # Anything the per-query handling did not anticipate (e.g. an unusable name in a
        # response) is still a failed check, never an exception for the scheduler.
        log.debug("dns check for %s failed: %s", domain, exc)
        queries = probe.queries if probe is not None else 0
        return Delegation(None, None, None, None, queries=queries, error="invalid_response")


@dataclass
class _Reply:
    response: dns.message.Message | None
    failure: Literal["timeout", "error"] | None = None


@dataclass
class _NsEntry:
    """One server of a zone: its name (None for configured root/resolver addresses) and the
    addresses known for it (None = not known yet, resolve on demand)."""

    name: dns.name.Name | None
    addresses: tuple[_Server, ...] | None


@dataclass
class _Step:
    """The end of a walk: a final answer, NXDOMAIN, a referral we asked to stop at, or failure."""

    kind: Literal["answer", "nxdomain", "referral", "glue", "failed"]
    zone: dns.name.Name
    response: dns.message.Message | None = None
    reason: str | None = None
    cut: dns.name.Name | None = None
    servers: list[_NsEntry] = field(default_factory=list)


class _Probe:
    """The state of one check: counters, the per-check caches and the query primitives."""

    def __init__(
        self, domain: str, settings: DnsSettings, on_query: Callable[[str], None] | None
    ) -> None:
        self.domain_text = domain
        self.domain = dns.name.from_text(_display(domain))
        self.timeout = settings.timeout
        self.on_query = on_query
        self.queries = 0
        self.sem = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self.resolvers = tuple(_server(s) for s in settings.resolvers)
        roots = settings.root_servers or IANA_ROOT_SERVERS
        # Known zone cuts -> their servers; the walk starts from the deepest known ancestor.
        self.cuts: dict[dns.name.Name, list[_NsEntry]] = {
            dns.name.root: [_NsEntry(None, (_server(s),)) for s in roots]
        }
        self.addresses: dict[dns.name.Name, tuple[_Server, ...]] = {}

    # -- the check ---------------------------------------------------------------------------

    async def run(self, extra_names: Iterable[str]) -> Delegation:
        if self.resolvers:
            start = await self._parent_zone_via_resolver()
            if isinstance(start, str):
                return self._failed(start)
            zone, servers = start
            self.cuts = {zone: servers}
        step = await self._iterate(self.domain, dns.rdatatype.NS, stop_at_cut=True, depth=0)
        zone_text = _display(step.zone)
        if step.kind == "failed":
            return self._failed(_check_error(step.reason), zone=None)
        if step.kind == "nxdomain":
            return Delegation(zone_text, (), False, None, queries=self.queries)
        assert step.response is not None
        if step.kind == "referral":
            ns_names = _ns_names(step.response.authority, self.domain)
        else:  # an authoritative answer from a server that also hosts the child zone
            ns_names = _ns_names(step.response.answer, self.domain)
            if not ns_names:  # NODATA: the name exists in the parent but is no zone cut
                return Delegation(zone_text, (), False, None, queries=self.queries)
        if step.kind == "answer":
            self._learn_glue(step.response, step.zone)
        parent = tuple(sorted({_display(n) for n in ns_names}))
        extra = {n for n in (normalise_host(x) for x in extra_names) if n}
        names = sorted(set(parent) | extra)
        results = await asyncio.gather(*(self._probe_child(n) for n in names))
        lame: dict[str, LameReason | None] = {}
        child_sets: dict[str, tuple[str, ...]] = {}
        for name, reason, ns_set in results:
            lame[name] = reason
            if ns_set is not None:
                child_sets[name] = ns_set
        child = tuple(sorted({n for s in child_sets.values() for n in s})) if child_sets else None
        error: CheckError | None = None
        if child is None and all(r in ("timeout", "no_address") for r in lame.values()):
            # Nothing answered at all: we cannot tell a dead domain from our own network
            # trouble, so the check failed (but the parent set is still a measured fact).
            error = "unreachable"
        return Delegation(
            zone_text,
            parent,
            True,
            child,
            child_sets=child_sets,
            lame=lame,
            queries=self.queries,
            error=error,
        )

    def _failed(self, error: CheckError, zone: str | None = None) -> Delegation:
        return Delegation(zone, None, None, None, queries=self.queries, error=error)

    async def _probe_child(self, ns: str) -> tuple[str, LameReason | None, tuple[str, ...] | None]:
        """Ask every address of NS name `ns` for the apex NS set (RD=0) and classify it (B3)."""
        addresses = await self._resolve(dns.name.from_text(ns), depth=1)
        if not addresses:
            return ns, "no_address", None
        replies = await asyncio.gather(
            *(self._send(self.domain, dns.rdatatype.NS, a, rd=False) for a in addresses)
        )
        reason: LameReason | None = None
        answered: set[str] = set()
        healthy = False
        for address, reply in zip(addresses, replies, strict=True):
            verdict = _child_verdict(reply, self.domain)
            if isinstance(verdict, str):
                reason = reason or verdict
                if reply.response is not None:  # silence was already logged by _send
                    log.debug(
                        "dns check for %s: server %s at %s is lame: %s",
                        self.domain_text,
                        ns,
                        address[0],
                        verdict,
                    )
            else:
                healthy = True
                answered |= verdict
        # A name is healthy only when all its addresses are: one dead address is a lame server.
        return ns, reason, tuple(sorted(answered)) if healthy else None

    # -- walking referrals -------------------------------------------------------------------

    async def _iterate(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        *,
        stop_at_cut: bool,
        depth: int,
    ) -> _Step:
        """Follow referrals from the deepest known cut above `qname` until an answer.

        With `stop_at_cut`, stop at the referral *for* `qname` itself: that is the parent side.
        """
        zone = self._closest_cut(qname, strict=stop_at_cut)
        servers = self.cuts[zone]
        for _ in range(_MAX_STEPS):
            step = await self._ask_zone(zone, servers, qname, rdtype, depth)
            if step.kind != "referral":
                return step
            assert step.cut is not None
            if stop_at_cut and step.cut == qname:
                return step
            self.cuts[step.cut] = step.servers
            if rdtype in _ADDRESS_TYPES and qname in self.addresses:
                # The referral carried in-bailiwick glue for the very host we are looking
                # up; that is what resolvers use to reach servers, so save the extra query.
                return _Step("glue", zone)
            zone, servers = step.cut, step.servers
        return _Step("failed", zone, reason="invalid_response")

    def _closest_cut(self, qname: dns.name.Name, *, strict: bool) -> dns.name.Name:
        name = qname.parent() if strict and qname != dns.name.root else qname
        while name not in self.cuts and name != dns.name.root:
            name = name.parent()
        if name not in self.cuts:  # resolver mode: the only cut known is the parent zone
            return next(iter(self.cuts))
        return name

    async def _ask_zone(
        self,
        zone: dns.name.Name,
        servers: list[_NsEntry],
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        depth: int,
    ) -> _Step:
        """Ask the servers of `zone` one after another until one gives a usable response."""
        reasons: list[str] = []
        # Names with known addresses first: they cost no extra lookups.
        ordered = sorted(servers, key=lambda e: (e.addresses is None, str(e.name)))
        for entry in ordered:
            addresses = entry.addresses
            if addresses is None:
                assert entry.name is not None
                addresses = await self._resolve(entry.name, depth + 1)
                entry.addresses = addresses
            for address in addresses:
                reply = await self._send(qname, rdtype, address, rd=False)
                if reply.response is None:
                    reasons.append("timeout")
                    continue
                step = self._classify(reply.response, zone, qname)
                if step.kind != "failed":
                    return step
                assert step.reason is not None
                reasons.append(step.reason)
                log.debug(
                    "dns check for %s: %s at %s (zone %s): %s",
                    self.domain_text,
                    qname,
                    address[0],
                    zone,
                    step.reason,
                )
        return _Step("failed", zone, reason=_worst(reasons))

    def _classify(
        self, response: dns.message.Message, zone: dns.name.Name, qname: dns.name.Name
    ) -> _Step:
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return _Step("nxdomain", zone, response)
        if rcode != dns.rcode.NOERROR:
            return _Step("failed", zone, reason=_rcode_reason(rcode))
        if response.flags & dns.flags.AA:
            return _Step("answer", zone, response)
        for rrset in response.authority:
            if rrset.rdtype != dns.rdatatype.NS:
                continue
            cut = rrset.name
            # A referral must go down from the zone we asked and towards the name we want;
            # anything else is an upward or foreign referral from a broken server.
            if cut != zone and cut.is_subdomain(zone) and qname.is_subdomain(cut):
                glue = self._learn_glue(response, zone)
                entries = [
                    _NsEntry(rr.target, glue.get(rr.target) or self.addresses.get(rr.target))
                    for rr in rrset
                ]
                return _Step("referral", zone, response, cut=cut, servers=entries)
            return _Step("failed", zone, reason="referral")
        return _Step("failed", zone, reason="not_authoritative")

    def _learn_glue(
        self, response: dns.message.Message, zone: dns.name.Name
    ) -> dict[dns.name.Name, tuple[_Server, ...]]:
        """Addresses from the additional section, only for names inside `zone` (bailiwick)."""
        found: dict[dns.name.Name, list[_Server]] = {}
        for rrset in response.additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.name.is_subdomain(
                zone
            ):
                found.setdefault(rrset.name, []).extend((rr.address, 53) for rr in rrset)
        glue = {name: _prefer_ipv4(addrs) for name, addrs in found.items()}
        for name, addrs in glue.items():
            self.addresses.setdefault(name, addrs)
        return glue

    # -- addresses of NS names ---------------------------------------------------------------

    async def _resolve(self, name: dns.name.Name, depth: int) -> tuple[_Server, ...]:
        """IPv4 addresses of a host (IPv6 only when it has no IPv4), cached for this check."""
        if name in self.addresses:
            return self.addresses[name]
        if depth > _MAX_DEPTH:
            return ()
        found: tuple[_Server, ...] = ()
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            found = await self._lookup(name, rdtype, depth)
            if found:
                break
        self.addresses[name] = found
        return found

    async def _lookup(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, depth: int
    ) -> tuple[_Server, ...]:
        for _ in range(_MAX_CNAMES):
            if self.resolvers:
                response = await self._recursive(name, rdtype)
                if isinstance(response, str) or response.rcode() != dns.rcode.NOERROR:
                    return ()
            else:
                step = await self._iterate(name, rdtype, stop_at_cut=False, depth=depth)
                if step.kind == "glue":
                    return self.addresses[name]
                if step.kind != "answer" or step.response is None:
                    return ()
                response = step.response
            addresses, target = _addresses_from(response, name, rdtype)
            if addresses or target is None:
                return addresses
            name = target  # a CNAME (RFC 2181 §10.3 forbids it for NS, but be lenient)
        return ()

    # -- resolver mode -----------------------------------------------------------------------

    async def _parent_zone_via_resolver(
        self,
    ) -> tuple[dns.name.Name, list[_NsEntry]] | CheckError:
        """The zone cut above the domain and its servers, as the recursive resolver sees them."""
        name = self.domain.parent() if self.domain != dns.name.root else self.domain
        zone: dns.name.Name | None = None
        while zone is None:
            response = await self._recursive(name, dns.rdatatype.SOA)
            if isinstance(response, str):
                return response
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.SOA and rrset.name == name:
                    zone = name
            for rrset in response.authority:
                # NODATA/NXDOMAIN carry the SOA of the enclosing zone (what zone_for_name uses).
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    zone = zone or rrset.name
            if zone is None:
                if name == dns.name.root:
                    return "no_parent"
                name = name.parent()
        response = await self._recursive(zone, dns.rdatatype.NS)
        if isinstance(response, str):
            return response
        names = _ns_names(response.answer, zone)
        if not names:
            return "no_parent"
        # The resolver is trusted, so any addresses it volunteers are usable.
        self._learn_glue(response, dns.name.root)
        return zone, [_NsEntry(n, self.addresses.get(n)) for n in names]

    async def _recursive(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message | CheckError:
        """One RD=1 question to the configured resolvers, trying the next one on failure."""
        reasons: list[str] = []
        for server in self.resolvers:
            reply = await self._send(qname, rdtype, server, rd=True)
            if reply.response is None:
                reasons.append("timeout")
                continue
            rcode = reply.response.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return reply.response
            reasons.append(_rcode_reason(rcode))
        return _check_error(_worst(reasons))

    # -- one DNS message ---------------------------------------------------------------------

    async def _send(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        server: _Server,
        *,
        rd: bool,
    ) -> _Reply:
        """One question to one server: UDP (TCP on TC=1), one TCP try after a UDP timeout,
        one retry without EDNS after FORMERR. Network failures become `_Reply.failure`."""
        host, port = server
        use_edns: int | bool = 0
        while True:
            q = dns.message.make_query(qname, rdtype, use_edns=use_edns, payload=_EDNS_PAYLOAD)
            if not rd:
                q.flags &= ~dns.flags.RD
            try:
                async with self.sem:
                    response, used_tcp = await dns.asyncquery.udp_with_fallback(
                        q, host, timeout=self.timeout, port=port, ignore_unexpected=True
                    )
                if used_tcp:
                    self._count("success")  # the truncated UDP answer was a message too
            except dns.exception.Timeout:
                self._count("timeout")
                # A lost datagram or a UDP-hostile path: one TCP try before calling it dead.
                try:
                    async with self.sem:
                        response = await dns.asyncquery.tcp(
                            q, host, timeout=self.timeout, port=port
                        )
                except (dns.exception.DNSException, OSError, EOFError) as exc:
                    self._count("timeout" if isinstance(exc, dns.exception.Timeout) else "error")
                    self._log_failure(qname, rdtype, host, "timeout", exc)
                    return _Reply(None, "timeout")
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
                self._count("error")
                self._log_failure(qname, rdtype, host, "error", exc)
                return _Reply(None, "error")
            self._count(_outcome(response.rcode()))
            if response.rcode() == dns.rcode.FORMERR and use_edns is not False:
                use_edns = False  # an old server that chokes on EDNS: ask once more without
                continue
            return _Reply(response)

    def _count(self, outcome: QueryOutcome) -> None:
        self.queries += 1
        if self.on_query is not None:
            self.on_query(outcome)

    def _log_failure(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        host: str,
        kind: str,
        exc: BaseException,
    ) -> None:
        log.debug(
            "dns check for %s: %s %s at %s: %s (%s)",
            self.domain_text,
            qname,
            dns.rdatatype.to_text(rdtype),
            host,
            kind,
            exc or type(exc).__name__,
        )


# -- pure helpers ------------------------------------------------------------------------------


def _server(text: str) -> _Server:
    host, port = split_host_port(text, 53)
    return host, port


def _prefer_ipv4(addresses: Iterable[_Server]) -> tuple[_Server, ...]:
    # Hosts without global IPv6 are common; querying v6 there would make every server "lame".
    unique = list(dict.fromkeys(addresses))
    v4 = [a for a in unique if ipaddress.ip_address(a[0]).version == 4]
    return tuple(v4 or unique)


def _ns_names(section: Iterable[dns.rrset.RRset], owner: dns.name.Name) -> list[dns.name.Name]:
    return sorted(
        {
            rr.target
            for rrset in section
            if rrset.rdtype == dns.rdatatype.NS and rrset.name == owner
            for rr in rrset
        }
    )


def _addresses_from(
    response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[tuple[_Server, ...], dns.name.Name | None]:
    """(addresses for `name`, following CNAMEs inside the answer; else the CNAME target)."""
    current = name
    for _ in range(_MAX_CNAMES):
        found = [
            (rr.address, 53)
            for rrset in response.answer
            if rrset.name == current and rrset.rdtype == rdtype
            for rr in rrset
        ]
        if found:
            return _prefer_ipv4(found), None
        cname = next(
            (
                rrset
                for rrset in response.answer
                if rrset.name == current and rrset.rdtype == dns.rdatatype.CNAME
            ),
            None,
        )
        if cname is None:
            return (), (None if current == name else current)
        current = cname[0].target
    return (), None


def _child_verdict(reply: _Reply, domain: dns.name.Name) -> LameReason | set[str]:
    """The NS set an authoritative server answered for the apex, or why it is lame."""
    response = reply.response
    if response is None:
        return "timeout"
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain"
    if rcode == dns.rcode.REFUSED:
        return "refused"
    if rcode != dns.rcode.NOERROR:
        return "servfail"
    if not response.flags & dns.flags.AA:
        if any(rrset.rdtype == dns.rdatatype.NS for rrset in response.authority):
            return "referral"
        return "not_authoritative"
    names = _ns_names(response.answer, domain)
    if not names:
        # AA but no apex NS: the server is authoritative for some enclosing zone, not this one.
        return "not_authoritative"
    return {_display(n) for n in names}


def _outcome(rcode: dns.rcode.Rcode) -> QueryOutcome:
    if rcode == dns.rcode.NOERROR:
        return "success"
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain"
    if rcode == dns.rcode.SERVFAIL:
        return "servfail"
    if rcode == dns.rcode.REFUSED:
        return "refused"
    return "error"


def _rcode_reason(rcode: dns.rcode.Rcode) -> str:
    if rcode == dns.rcode.REFUSED:
        return "refused"
    if rcode == dns.rcode.SERVFAIL:
        return "servfail"
    return "invalid_response"


# When every server of a zone failed, report the most telling reason: an explicit refusal or
# SERVFAIL says more than silence.
_REASON_RANK = ("refused", "servfail", "invalid_response", "timeout")


def _worst(reasons: list[str]) -> str:
    if not reasons:
        return "no_address"
    for reason in _REASON_RANK:
        if reason in reasons:
            return reason
    return "invalid_response"


_CHECK_ERRORS: dict[str | None, CheckError] = {
    "timeout": "timeout",
    "servfail": "servfail",
    "refused": "refused",
    "no_parent": "no_parent",
    "unreachable": "unreachable",
    # No address for any server of a zone on the way down: the parent cannot be reached.
    "no_address": "no_parent",
}


def _check_error(reason: str | None) -> CheckError:
    return _CHECK_ERRORS.get(reason, "invalid_response")
