"""DNS delegation probe: what the parent zone publishes for a domain, and what its servers say.

`check_delegation(domain, settings)` finds the parent zone by following referrals (from the root
servers, or from the zone cut a configured recursive resolver reports), asks the parent's servers
directly with RD=0 for the domain's NS set, then asks every server the PARENT delegates to for
the apex NS set (design doc B1-B3). It never raises for network failures: a failure is data in
`Delegation.error`, and an unmeasured set is `None`, never an empty set.

Only authoritative answers are facts (issue 7):
- A NXDOMAIN, or NODATA for NS, counts only with the AA bit, from a server of the zone that was
  asked. Without AA (an intercepting network, a captive portal) the next server of that zone is
  tried; when none gives an authoritative answer or a proper referral the check fails with
  `not_authoritative`.
- `delegated False` needs that authoritative negative answer from a parent-zone server, confirmed
  by a second server of the parent zone when it has more than one. When another parent server
  refers instead, the domain is delegated (a referral from any authoritative parent server wins)
  and the server that said otherwise is named in `Delegation.disagreeing` and the log.

Bounds (issue 8), per check:
- Wall clock: `check_deadline(settings)` = DEADLINE_FACTOR x dns.timeout (12 s with the default
  3 s). The walk asks a zone's servers one after another over UDP only (a dead server costs one
  timeout, the next server is the better retry); the children are probed in parallel, each
  address over UDP and, after a UDP timeout, once over TCP (2 x timeout). So one dead server on
  the way down plus dead children still fits; beyond that the check fails with `deadline`.
- Messages: QUERY_BUDGET (every UDP or TCP message counts); then the check fails `query_budget`.
- Servers: at most MAX_NS_PER_ZONE names of one zone are tried on the way down, and at most that
  many of the domain's own NS names are probed (sorted order; the others are `skipped`).
A check that ends on the deadline or the budget keeps what it measured (the parent set, the
verdicts of the children that finished).

IPv6: every NS name is resolved for A and AAAA and each address is asked. An address this host
has no route to (a UDP connect() fails with ENETUNREACH/EADDRNOTAVAIL/EAFNOSUPPORT; no packet is
sent) is skipped with reason `no_route` and never makes a server lame; a reachable address that
answers wrongly or not at all does (a dual-stack server with a dead IPv6 address is lame).

Politeness at scale (issue 9): with a shared `zonecache.ZoneCache` (the exporter passes one; a
bare call gets none, so each check then walks from the root), the walk starts from the deepest
cached zone cut above the domain, the addresses of the servers on the way come from the cache,
questions on the way down that other checks are asking right now are asked once, each zone's
servers take turns being asked first, and a server that timed out is asked last for a while.
The question for the domain's own NS set at its parent is never answered from the cache: that is
the measurement. Only what a walk from the root learns goes into the cache (referrals from the
zone asked, authoritative answers); in resolver mode the resolver is the cache. Every message
is counted by the kind of server asked (`ServerKind`, the `server_kind` label of
`domainwatch_dns_queries_total`).

`nameserver_mismatch(parent, expected, registry)` is the pure comparison (B4, issue 7): the
parent's set against the expected set when one is configured, else against the registry's.

Every name this module returns is a lower-case A-label without trailing dot.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from exporter import dnsquery
from exporter.config import DnsSettings, split_host_port
from exporter.dnsquery import NO_ROUTE_ERRNOS, QueryOutcome, ns_targets, rcode_reason, worst
from exporter.names import normalise_host
from exporter.zonecache import (
    RANK_ANSWER,
    RANK_GLUE,
    CachedServer,
    NameKey,
    ZoneCache,
    name_key,
)

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

# One check's wall-clock deadline is DEADLINE_FACTOR x dns.timeout (issue 8: <= 4 x timeout).
DEADLINE_FACTOR = 4.0
# DNS messages one check may send. A healthy domain with 16 dual-stack NS names outside its own
# zone costs about 70 in root mode (walk 3, name lookups 2 per name after the first of a
# provider zone, 2 probes per name); the budget only stops pathological delegations.
QUERY_BUDGET = 100
# NS names tried per zone on the way down, and NS names of the domain probed. Real NS sets have
# 2-13 names; a delegation to 1,000 names must not cost 1,000 probes.
MAX_NS_PER_ZONE = 16

# A verdict on one nameserver (None in `Delegation.lame` = healthy).
LameReason = Literal[
    "timeout", "refused", "servfail", "not_authoritative", "nxdomain", "no_address", "referral"
]
# Why a nameserver of the parent's set has no verdict.
SkipReason = Literal["no_route", "unresolved", "not_probed"]
CheckError = Literal[
    "timeout",
    "servfail",
    "refused",
    "no_parent",
    "unreachable",
    "invalid_response",
    "not_authoritative",
    "no_route",
    "deadline",
    "query_budget",
]
# Which servers a message went to, by the zone they were asked as servers of:
# root      the root zone's servers;
# tld       a top-level zone's servers (for a domain directly under a TLD this includes the
#           question for the domain's own NS set: the TLD is its parent);
# parent    the servers of any other zone above the domain (a parent below a multi-label public
#           suffix such as co.uk, and the zones between it and its TLD);
# child     the servers the parent delegates the domain to, and the servers of zones that only
#           host the names of nameservers (looked up to reach them);
# resolver  the configured recursive resolvers (RD=1).
ServerKind = Literal["root", "tld", "parent", "child", "resolver"]
SERVER_KINDS: tuple[ServerKind, ...] = ("root", "tld", "parent", "child", "resolver")

# Concurrent DNS messages in flight for one check (the children are probed in parallel); the
# scheduler bounds checks across domains.
_MAX_IN_FLIGHT = 16
# Referral steps in one walk (root -> TLD -> suffix -> ... ); real chains are 2-4 deep.
_MAX_STEPS = 10
# Nesting of "resolve the address of an out-of-bailiwick NS name" inside another walk.
_MAX_DEPTH = 4
_MAX_CNAMES = 4

_Server = tuple[str, int]  # (address, port)
# The questions on the way down that this task is asking right now (`ZoneCache.take_off`): a
# lookup nested inside one of them never waits for itself. Other tasks of the same check (the
# parallel child probes) do wait for each other, like different checks.
_FLYING: contextvars.ContextVar[frozenset[tuple[object, ...]]] = contextvars.ContextVar(
    "nameservers_in_flight", default=frozenset()
)
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass(frozen=True)
class Delegation:
    """The measured delegation of one domain. `None` always means "not measured"."""

    parent_zone: str | None  # "test", "co.test", "." for a TLD; None when not found
    parent: tuple[str, ...] | None  # NS names in the parent's referral, sorted; () = none
    delegated: bool | None  # False only from confirmed authoritative NXDOMAIN/NODATA
    child: tuple[str, ...] | None  # union of apex NS sets from authoritative child answers
    child_sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Verdicts on the parent's NS names (None = healthy). Names without a verdict are in
    # `skipped`, never here.
    lame: Mapping[str, LameReason | None] = field(default_factory=dict)
    queries: int = 0
    error: CheckError | None = None
    # Parent-zone servers whose authoritative answer lost to another's referral, "name (address)".
    disagreeing: tuple[str, ...] = ()
    skipped: Mapping[str, SkipReason] = field(default_factory=dict)
    # "name address" of NS addresses not asked because this host has no route to them.
    unroutable: tuple[str, ...] = ()
    # Messages by the kind of server they went to (ServerKind -> count; sums to `queries`).
    query_kinds: Mapping[str, int] = field(default_factory=dict)

    @property
    def child_sets_differ(self) -> bool:
        """Zonemaster CONSISTENCY04: two authoritative servers answered different NS sets."""
        return len(set(self.child_sets.values())) > 1

    @property
    def lame_servers(self) -> tuple[str, ...]:
        return tuple(sorted(ns for ns, reason in self.lame.items() if reason is not None))

    @property
    def inconsistent(self) -> bool | None:
        """`domain_nameserver_inconsistent`: the parent's set differs from the union of the apex
        NS sets its servers answered. None when not delegated or no child answered."""
        if not self.delegated or self.parent is None or self.child is None:
            return None
        return _name_set(self.parent) != _name_set(self.child)

    def mismatch(
        self, expected: Iterable[str] | None, registry: Iterable[str] | None
    ) -> bool | None:
        """`nameserver_mismatch` for this measurement (see that function).

        A check that failed after measuring the parent set (e.g. `unreachable`) still gives a
        verdict: the parent's set is a fact even when no child answered (issue 7 case 5).
        """
        return nameserver_mismatch(self.parent if self.delegated else None, expected, registry)


def nameserver_mismatch(
    parent: Iterable[str] | None,
    expected: Iterable[str] | None,
    registry: Iterable[str] | None,
    child: Iterable[str] | None = None,
) -> bool | None:
    """True when the parent's set differs from the expected set (if non-empty), else from the
    registry's set.

    None when the parent set was not measured (None), the domain is not delegated (empty set),
    or neither an expected nor a registry set is known: no comparison, no verdict. `child` is
    ignored (the child's set decides `inconsistent`, never a mismatch); it is accepted so that
    callers written for the old four-argument form keep working.
    Names are compared after normalisation, so case, order and a trailing dot do not matter.
    """
    del child
    if not parent:
        return None
    p = _name_set(parent)
    if expected is not None:
        e = _name_set(expected)
        if e:
            return e != p
    if registry is None:
        return None
    return _name_set(registry) != p


def check_deadline(settings: DnsSettings) -> float:
    """The wall-clock deadline of one delegation check, in seconds."""
    return DEADLINE_FACTOR * settings.timeout


def _name_set(names: Iterable[str]) -> frozenset[str]:
    return frozenset(_display(n) for n in names)


def _display(name: str | dns.name.Name) -> str:
    if isinstance(name, dns.name.Name):
        return _display_labels(name.labels)
    return _display_text(name)


@functools.lru_cache(maxsize=4096)
def _display_labels(labels: tuple[bytes, ...]) -> str:
    # Keyed by the labels (bytes hash once and compare fast; a Name hashes every label again).
    return _display_text(dns.name.Name(labels).to_text(omit_final_dot=True))


@functools.lru_cache(maxsize=4096)
def _display_text(text: str) -> str:
    # Memoised: the same few NS names come back in every check, and UTS 46 mapping is not free.
    if text in (".", ""):
        return "."
    return normalise_host(text) or text.rstrip(".").lower()


async def check_delegation(
    domain: str,
    settings: DnsSettings,
    *,
    extra_names: Iterable[str] = (),
    on_query: Callable[[str], None] | None = None,
    on_query_kind: Callable[[str, str], None] | None = None,
    cache: ZoneCache | None = None,
) -> Delegation:
    """Measure the delegation of `domain` (parent referral, child apex NS, lame servers).

    `extra_names` is accepted and ignored: only the servers the parent delegates to are asked
    (issue 7: probing stale registry or expected names made false "child" sets).
    `on_query(outcome)` is called once per DNS message sent (outcome: success, nxdomain,
    timeout, servfail, refused, error), and `on_query_kind(outcome, server_kind)` too, with the
    kind of server asked (ServerKind); `Delegation.queries` is their number.
    `cache`: zone cuts and server addresses shared with other checks (see the module doc); None
    walks from the root with nothing remembered.
    """
    del extra_names
    return await _Probe(domain, settings, on_query, on_query_kind, cache).check()


class _Stopped(Exception):
    """The check hit its deadline or query budget: no further message may be sent."""


@dataclass
class _Reply:
    response: dns.message.Message | None
    failure: Literal["timeout", "error", "no_route"] | None = None


@dataclass
class _NsEntry:
    """One server of a zone: its name (None for configured root/resolver addresses) and the
    addresses known for it (None = not known yet, resolve on demand)."""

    name: dns.name.Name | None
    addresses: tuple[_Server, ...] | None


@dataclass(frozen=True)
class _Found:
    """Addresses of one type for a name; `definitive` when an authoritative (or, in resolver
    mode, the resolver's) answer said so, False when the lookup failed."""

    addresses: tuple[_Server, ...]
    definitive: bool


@dataclass
class _Step:
    """The end of a walk: an answer, NXDOMAIN, a referral, a confirmed negative, or failure."""

    kind: Literal["answer", "nxdomain", "referral", "glue", "negative", "failed"]
    zone: dns.name.Name
    response: dns.message.Message | None = None
    reason: str | None = None
    cut: dns.name.Name | None = None
    servers: list[_NsEntry] = field(default_factory=list)
    entry: _NsEntry | None = None  # the server that gave this response
    address: _Server | None = None  # ... and the address it was asked at
    # A referral: the glue it carried (in the bailiwick of the zone asked), and how long the
    # cut may be remembered (the smallest TTL of its NS set and that glue).
    glue: Mapping[dns.name.Name, tuple[_Server, ...]] = field(default_factory=dict)
    ttl: float = 0.0

    @property
    def source(self) -> str:
        """ "name (address)" of the server that gave this response, for logs (formatted only
        when needed: a check makes several steps and rarely logs one)."""
        if self.entry is None or self.address is None:
            return ""
        return _describe(self.entry, self.address)


class _Gate:
    """Lets the NS names of one provider zone resolve after the first one: its walk fills the
    zone-cut cache, so the others cost one query per address type instead of a walk each."""

    def __init__(self, leader: bool, ready: asyncio.Event) -> None:
        self.leader = leader
        self.ready = ready


class _Probe:
    """The state of one check: counters, the per-check caches and the query primitives."""

    def __init__(
        self,
        domain: str,
        settings: DnsSettings,
        on_query: Callable[[str], None] | None,
        on_query_kind: Callable[[str, str], None] | None = None,
        cache: ZoneCache | None = None,
    ) -> None:
        self.domain_text = domain
        self.domain = dns.name.from_text(_display(domain))
        self.timeout = settings.timeout
        self.deadline = check_deadline(settings)
        self.on_query = on_query
        self.on_query_kind = on_query_kind
        self.queries = 0
        self.kinds: dict[str, int] = {}
        self.sent = 0
        self.exhausted = False  # the query budget ran out
        self.run_task: asyncio.Future[Delegation] | None = None
        self.stopped = False
        self.sem = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self.resolvers = _servers(tuple(settings.resolvers))
        roots = _servers(tuple(settings.root_servers or IANA_ROOT_SERVERS))
        # Only a walk from the root fills the shared cache: in resolver mode the parent zone and
        # its servers are the resolver's word, which is no authoritative fact.
        self.shared = cache if not self.resolvers else None
        if self.shared is not None:
            self.shared.bind(roots)
        # Known zone cuts -> their servers; the walk starts from the deepest known ancestor
        # (this check's own, then the shared cache's).
        self.cuts: dict[dns.name.Name, list[_NsEntry]] = {
            dns.name.root: [_NsEntry(None, (s,)) for s in roots]
        }
        # (name_key(name), rdtype) -> what this check knows of that name's addresses.
        self.addresses: dict[tuple[NameKey, int], _Found] = {}
        self.routes: dict[str, bool] = {}
        # Walk servers that timed out in this check are not asked again (a resolver's infra
        # cache): 1,000 NS names in one dead zone cost one timeout, not 1,000.
        self.silent: set[_Server] = set()
        # What has been measured so far; a deadline or budget stop returns exactly this.
        self.zone_text: str | None = None
        self.parent: tuple[str, ...] | None = None
        self.delegated: bool | None = None
        self.lame: dict[str, LameReason | None] = {}
        self.child_sets: dict[str, tuple[str, ...]] = {}
        self.skipped: dict[str, SkipReason] = {}
        self.disagreeing: list[str] = []
        self.unroutable: list[str] = []

    # -- the check under its deadline and budget -------------------------------------------

    async def check(self) -> Delegation:
        run = self.run_task = asyncio.ensure_future(self._run_guarded())
        try:
            done, _ = await asyncio.wait({run}, timeout=self.deadline)
        except asyncio.CancelledError:
            self.stopped = True
            run.cancel()
            raise
        if run in done:
            # Cancelled only by `_message` when the query budget runs out (it cancels the walk
            # and every query in flight at once, like the deadline below).
            return self._stopped_result() if run.cancelled() else run.result()
        # Cancelling the walk cancels every query in flight (each is counted as a timeout).
        # `stopped` makes any later message fail at once, so even a task whose cancellation
        # got lost (asyncio.wait_for in Python 3.11 can swallow one) cannot go on querying.
        self.stopped = True
        run.cancel()
        await asyncio.wait({run}, timeout=self.timeout)
        return self._stopped_result()

    def _stopped_result(self) -> Delegation:
        error: CheckError = "query_budget" if self.exhausted else "deadline"
        log.debug(
            "dns check for %s stopped: %s after %d queries (deadline %.1fs, budget %d)",
            self.domain_text,
            error,
            self.queries,
            self.deadline,
            QUERY_BUDGET,
        )
        return self._result(error)

    async def _run_guarded(self) -> Delegation:
        try:
            return await self._run()
        except _Stopped:
            return self._stopped_result()
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            # Anything the per-query handling did not anticipate (e.g. an unusable name in a
            # response) is still a failed check, never an exception for the scheduler.
            log.debug("dns check for %s failed: %s", self.domain_text, exc)
            return self._result("invalid_response")

    async def _run(self) -> Delegation:
        if self.resolvers:
            start = await self._parent_zone_via_resolver()
            if isinstance(start, str):
                return self._result(start)
            zone, servers = start
            self.cuts = {zone: servers}
        step = await self._iterate(self.domain, dns.rdatatype.NS, stop_at_cut=True, chain=())
        if step.kind == "failed":
            return self._result(_check_error(step.reason))
        self.zone_text = _display(step.zone)
        if step.kind == "negative":
            self.parent, self.delegated = (), False
            return self._result(None)
        assert step.response is not None
        section = step.response.authority if step.kind == "referral" else step.response.answer
        ns_names = ns_targets(section, self.domain)
        if step.kind == "answer":  # a parent server that also hosts the child zone
            self._learn_glue(step.response, step.zone, share=False)
        self.parent = tuple(sorted({_display(n) for n in ns_names}))
        self.delegated = True
        # The domain's own servers answer for in-bailiwick names (e.g. AAAA of ns1.<domain>
        # when the referral's glue had only A).
        self.cuts[self.domain] = step.servers or [
            _NsEntry(n, self._known_addresses(n)) for n in ns_names
        ]
        await self._probe_children(self.parent, {_display(n): n for n in ns_names})
        return self._result(self._children_error())

    def _result(self, error: CheckError | None) -> Delegation:
        measured = self.parent is not None
        child = (
            tuple(sorted({n for s in self.child_sets.values() for n in s}))
            if self.child_sets
            else None
        )
        skipped = dict(self.skipped)
        if self.delegated:
            for name in self.parent or ():
                if name not in self.lame and name not in skipped:
                    skipped[name] = "not_probed"  # stopped by the deadline or the budget
        return Delegation(
            self.zone_text if measured else None,
            self.parent,
            self.delegated,
            child,
            child_sets=dict(self.child_sets),
            lame=dict(self.lame),
            queries=self.queries,
            error=error,
            disagreeing=tuple(self.disagreeing),
            skipped=skipped,
            unroutable=tuple(self.unroutable),
            query_kinds=dict(self.kinds),
        )

    def _children_error(self) -> CheckError | None:
        if self.child_sets:
            return None
        if any(r not in ("timeout", "no_address") for r in self.lame.values()):
            return None  # servers answered, wrongly: those are verdicts, the check worked
        if not self.lame and self.skipped and set(self.skipped.values()) == {"no_route"}:
            return "no_route"
        # Nothing answered at all: we cannot tell a dead domain from our own network trouble,
        # so the check failed (but the parent set is still a measured fact).
        return "unreachable"

    # -- the child side ----------------------------------------------------------------------

    async def _probe_children(
        self, names: tuple[str, ...], hosts: Mapping[str, dns.name.Name]
    ) -> None:
        probed = list(names[:MAX_NS_PER_ZONE])
        for name in names[MAX_NS_PER_ZONE:]:
            self.skipped[name] = "not_probed"
        gates: dict[NameKey, asyncio.Event] = {}
        jobs = []
        for ns in probed:
            host = hosts.get(ns) or dns.name.from_text(ns)
            zone = name_key(host)[1:]  # the zone its name is in (its parent name)
            leader = zone not in gates
            ready = gates.setdefault(zone, asyncio.Event())
            jobs.append(self._probe_child(ns, host, _Gate(leader, ready)))
        # return_exceptions: one unusable name must not leave the other probes running
        # unsupervised; it just gets no verdict.
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for ns, result in zip(probed, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, dns.exception.DNSException | OSError | ValueError):
                    raise result  # cancelled, or _Stopped: the check ends
                log.debug("dns check for %s: server %s: %s", self.domain_text, ns, result)
                self.skipped[ns] = "unresolved"

    async def _probe_child(self, ns: str, host: dns.name.Name, gate: _Gate) -> None:
        """Ask every address of NS name `ns` for the apex NS set (RD=0) and classify it (B3).

        Each address type is resolved and probed on its own, so known glue is asked at once
        while the other type is still being looked up.
        """

        async def family(
            rdtype: dns.rdatatype.RdataType,
        ) -> tuple[_Found, list[tuple[_Server, LameReason | set[str] | None]]]:
            found = self._address_entry(host, rdtype)
            if found is None:
                waits = not (gate.leader and rdtype == dns.rdatatype.A)
                if waits:
                    await gate.ready.wait()
                try:
                    found = await self._lookup(host, rdtype, chain=(host,))
                finally:
                    if not waits:
                        gate.ready.set()
            elif gate.leader and rdtype == dns.rdatatype.A:
                gate.ready.set()
            verdicts = await asyncio.gather(*(self._probe_address(ns, a) for a in found.addresses))
            return found, list(zip(found.addresses, verdicts, strict=True))

        known_a, known_aaaa = (self._address_entry(host, t) for t in _ADDRESS_TYPES)
        if known_a is not None and known_aaaa is not None:
            # Both types known already (glue, the shared cache): no task per address type.
            if gate.leader:
                gate.ready.set()
            found_a, found_aaaa = known_a, known_aaaa
            both = (*found_a.addresses, *found_aaaa.addresses)
            if len(both) == 1:
                verdicts = [await self._probe_address(ns, both[0])]
            else:
                verdicts = await asyncio.gather(*(self._probe_address(ns, a) for a in both))
            pairs = list(zip(both, verdicts, strict=True))
            v4, v6 = pairs[: len(found_a.addresses)], pairs[len(found_a.addresses) :]
        else:
            (found_a, v4), (found_aaaa, v6) = await asyncio.gather(
                family(dns.rdatatype.A), family(dns.rdatatype.AAAA)
            )
        asked = [(a, v) for a, v in (*v4, *v6) if v is not None]  # None = no route from here
        if not asked:
            if v4 or v6:
                self.skipped[ns] = "no_route"
            elif found_a.definitive and found_aaaa.definitive:
                self.lame[ns] = "no_address"  # authoritative: the name has no address
            else:
                self.skipped[ns] = "unresolved"  # its lookup failed: no verdict either way
            return
        reason: LameReason | None = None
        answered: set[str] = set()
        healthy = False
        for address, verdict in asked:
            if isinstance(verdict, str):
                # One bad address makes a lame server (a dual-stack server with a dead IPv6
                # address fails every client that prefers IPv6); the first one gives the reason.
                reason = reason or verdict
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
        self.lame[ns] = reason
        if healthy:
            self.child_sets[ns] = tuple(sorted(answered))

    async def _probe_address(self, ns: str, address: _Server) -> LameReason | set[str] | None:
        """The verdict of one address; None when this host has no route to it."""
        reply = await self._send(
            self.domain, dns.rdatatype.NS, address, rd=False, tcp_retry=True, kind="child"
        )
        if reply.failure == "no_route":
            self.unroutable.append(f"{ns} {address[0]}")
            log.debug(
                "dns check for %s: server %s at %s skipped: no_route",
                self.domain_text,
                ns,
                address[0],
            )
            return None
        return _child_verdict(reply, self.domain)

    # -- walking referrals -------------------------------------------------------------------

    async def _iterate(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        *,
        stop_at_cut: bool,
        chain: tuple[dns.name.Name, ...],
    ) -> _Step:
        """Follow referrals from the deepest known cut above `qname` until an answer.

        With `stop_at_cut`, stop at the referral *for* `qname` itself: that is the parent side,
        and a negative answer there must be authoritative and confirmed (kind "negative").
        `chain` holds the NS names being resolved around this walk (cycle and depth guard).
        """
        zone = self._closest_cut(qname, strict=stop_at_cut)
        waited: set[dns.name.Name] = set()
        for _ in range(_MAX_STEPS):
            # The question for the domain's own NS set at its parent is the measurement: no
            # other check asks it, so it takes no flight.
            measuring = stop_at_cut and len(qname) == len(zone) + 1
            key = None if self.shared is None or measuring else _flight_key(zone, qname, rdtype)
            if key is not None and zone not in waited and key not in _FLYING.get():
                assert self.shared is not None
                flight = self.shared.flight(key)
                if flight is not None:
                    # Another check is asking this zone the same way down right now: wait for
                    # its referral (at most one query's time) instead of asking again.
                    waited.add(zone)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.timeout):
                            await flight.wait()
                    if (
                        not stop_at_cut
                        and rdtype in _ADDRESS_TYPES
                        and self._address_entry(qname, rdtype) is not None
                    ):
                        return _Step("glue", zone)
                    deeper = self._closest_cut(qname, strict=stop_at_cut)
                    if deeper != zone and deeper.is_subdomain(zone):
                        zone = deeper
                    continue
            step = await self._ask_zone_once(zone, qname, rdtype, chain, key, stop_at_cut)
            if step.kind != "referral":
                return step
            assert step.cut is not None
            if stop_at_cut and step.cut == qname:
                return step
            if rdtype in _ADDRESS_TYPES and _akey(qname, rdtype) in self.addresses:
                # The referral carried in-bailiwick glue for the very host we are looking
                # up; that is what resolvers use to reach servers, so save the extra query.
                return _Step("glue", zone)
            zone = step.cut
        return _Step("failed", zone, reason="invalid_response")

    async def _ask_zone_once(
        self,
        zone: dns.name.Name,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        chain: tuple[dns.name.Name, ...],
        key: tuple[object, ...] | None,
        stop_at_cut: bool,
    ) -> _Step:
        """One step of a walk; other checks that want the same step (`key`) meanwhile wait for
        it, and a referral on the way down is remembered (here and in the shared cache) before
        they wake up."""
        event = token = None
        if key is not None and self.shared is not None:
            event = self.shared.take_off(key)
            token = _FLYING.set(_FLYING.get() | {key})
        try:
            servers = self.cuts[zone]
            step = await self._ask_zone(zone, servers, qname, rdtype, chain)
            if stop_at_cut and _is_negative(step, qname):
                step = await self._confirm_negative(zone, servers, qname, step, chain)
            if step.kind == "referral" and not (stop_at_cut and step.cut == qname):
                # The referral for the domain itself is the measurement: never remembered as
                # a cut, so the next check asks the parent again.
                self._remember_cut(step)
            elif step.kind == "failed" and self.shared is not None and zone != dns.name.root:
                # No server of the zone gave a usable answer: whatever is cached about its
                # servers may be stale (a renumbered TLD), so the next check walks down again.
                self.shared.drop_cut(zone)
            return step
        finally:
            if token is not None:
                _FLYING.reset(token)
            if key is not None and event is not None and self.shared is not None:
                self.shared.land(key, event)

    def _remember_cut(self, step: _Step) -> None:
        assert step.cut is not None
        self.cuts[step.cut] = step.servers
        if self.shared is not None:
            self.shared.put_cut(
                step.cut,
                tuple(
                    CachedServer(e.name, step.glue.get(e.name) if e.name is not None else None)
                    for e in step.servers
                ),
                step.ttl,
            )

    async def _confirm_negative(
        self,
        zone: dns.name.Name,
        servers: list[_NsEntry],
        qname: dns.name.Name,
        first: _Step,
        chain: tuple[dns.name.Name, ...],
    ) -> _Step:
        """One server of `zone` said (authoritatively) that `qname` has no delegation: ask the
        zone's other servers before calling it a fact."""
        others = [e for e in servers if e is not first.entry]
        if not others:  # a zone with one server: its authoritative word is all there is
            return _Step("negative", zone, first.response, entry=first.entry, address=first.address)
        second = await self._ask_zone(zone, others, qname, dns.rdatatype.NS, chain)
        if second.kind == "failed":
            log.debug(
                "dns check for %s: negative answer for %s from %s (zone %s) not confirmed: %s",
                self.domain_text,
                qname,
                first.source,
                _display(zone),
                second.reason,
            )
            return second
        if _is_negative(second, qname):
            return _Step("negative", zone, first.response, entry=first.entry, address=first.address)
        self.disagreeing.append(first.source)
        log.warning(
            "parent servers disagree: domain=%s zone=%s negative_from=%s referral_from=%s",
            self.domain_text,
            _display(zone),
            first.source,
            second.source,
        )
        return second

    def _closest_cut(self, qname: dns.name.Name, *, strict: bool) -> dns.name.Name:
        name = qname.parent() if strict and qname != dns.name.root else qname
        while name not in self.cuts and not self._cached_cut(name) and name != dns.name.root:
            name = name.parent()
        if name not in self.cuts:  # resolver mode: the only cut known is the parent zone
            return next(iter(self.cuts))
        return name

    def _cached_cut(self, zone: dns.name.Name) -> bool:
        """Take the cut `zone` from the shared cache into this check's, if it is there."""
        if self.shared is None:
            return False
        cached = self.shared.cut(zone)
        if cached is None:
            return False
        self.cuts[zone] = [
            _NsEntry(
                s.name,
                s.addresses
                if s.addresses is not None or s.name is None
                else self._known_addresses(s.name),
            )
            for s in cached
        ]
        return True

    async def _ask_zone(
        self,
        zone: dns.name.Name,
        servers: list[_NsEntry],
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        chain: tuple[dns.name.Name, ...],
    ) -> _Step:
        """Ask the servers of `zone` one after another until one gives a usable response
        (an authoritative answer or NXDOMAIN, or a referral further down)."""
        reasons: list[str] = []
        kind = self._zone_kind(zone)
        for entry in self._order(zone, servers)[:MAX_NS_PER_ZONE]:
            address = await self._walk_address(entry, chain)
            if isinstance(address, str):
                reasons.append(address)
                continue
            if address in self.silent:
                reasons.append("timeout")
                continue
            reply = await self._send(qname, rdtype, address, rd=False, tcp_retry=False, kind=kind)
            if reply.response is None:
                assert reply.failure is not None
                reasons.append(reply.failure)
                if reply.failure == "timeout":
                    self.silent.add(address)
                    if self.shared is not None:
                        self.shared.timed_out(address)
                continue
            if self.shared is not None:
                self.shared.answered(address)
            step = self._classify(reply.response, zone, qname)
            step.entry = entry
            step.address = address
            if step.kind != "failed":
                return step
            assert step.reason is not None
            reasons.append(step.reason)
            log.debug(
                "dns check for %s: %s %s at %s (zone %s): %s",
                self.domain_text,
                qname,
                dns.rdatatype.to_text(rdtype),
                step.source,
                _display(zone),
                step.reason,
            )
        return _Step("failed", zone, reason=worst(reasons))

    def _order(self, zone: dns.name.Name, servers: list[_NsEntry]) -> list[_NsEntry]:
        """The order to ask a zone's servers in. Names with known addresses first: they cost no
        extra lookups. With the shared cache, each question starts one server further along
        (every server of the zone shares the load) and a server that timed out lately goes
        last; without it, configured order, then by name."""
        ordered = sorted(servers, key=lambda e: str(e.name))  # stable: configured roots keep order
        if self.shared is None:
            return sorted(ordered, key=lambda e: e.addresses is None)
        start = self.shared.turn(zone, len(ordered))
        ordered = ordered[start:] + ordered[:start]
        return sorted(ordered, key=lambda e: (self._backing_off(e), e.addresses is None))

    def _backing_off(self, entry: _NsEntry) -> bool:
        assert self.shared is not None
        if not self.shared.backoffs:
            return False
        routable = [a for a in entry.addresses or () if self._routable(a[0])]
        return bool(routable) and self.shared.backing_off(routable[0])

    def _zone_kind(self, zone: dns.name.Name) -> ServerKind:
        """The `server_kind` of a server asked as a server of `zone` (see ServerKind)."""
        if zone == dns.name.root:
            return "root"
        if len(zone) == 2:  # one label and the root label
            return "tld"
        if zone != self.domain and self.domain.is_subdomain(zone):
            return "parent"
        return "child"

    async def _walk_address(
        self, entry: _NsEntry, chain: tuple[dns.name.Name, ...]
    ) -> _Server | str:
        """The address to ask a zone's server at (IPv4 preferred), or why there is none.

        One address per server: on the way down the zone's next server is the better retry.
        """
        if entry.addresses is None:
            assert entry.name is not None
            if entry.name in chain or len(chain) > _MAX_DEPTH:
                return "no_address"  # a glueless delegation that depends on itself
            found: tuple[_Server, ...] = ()
            for rdtype in _ADDRESS_TYPES:
                result = await self._lookup(entry.name, rdtype, chain=(*chain, entry.name))
                found += result.addresses
                if any(self._routable(a[0]) for a in found):
                    break
            entry.addresses = found
        routable = [a for a in entry.addresses if self._routable(a[0])]
        if routable:
            return routable[0]
        return "no_route" if entry.addresses else "no_address"

    def _classify(
        self, response: dns.message.Message, zone: dns.name.Name, qname: dns.name.Name
    ) -> _Step:
        rcode = response.rcode()
        authoritative = bool(response.flags & dns.flags.AA)
        if rcode == dns.rcode.NXDOMAIN:
            # Without AA a NXDOMAIN is hearsay (an intercepting network answers it for
            # everything, even for a root server's address): never evidence.
            return _Step("nxdomain", zone, response) if authoritative else _not_authoritative(zone)
        if rcode != dns.rcode.NOERROR:
            return _Step("failed", zone, reason=rcode_reason(rcode))
        if authoritative:
            return _Step("answer", zone, response)
        for rrset in response.authority:
            if rrset.rdtype != dns.rdatatype.NS:
                continue
            cut = rrset.name
            # A referral must go down from the zone we asked and towards the name we want;
            # anything else is an upward or foreign referral from a broken server.
            if cut != zone and cut.is_subdomain(zone) and qname.is_subdomain(cut):
                # The glue of the measured referral itself stays in this check: its child
                # probes use it, and sharing it for every check of every domain would cost more
                # than the one lookup per TTL it saves another domain with the same servers.
                glue = self._learn_glue(response, zone, share=cut != self.domain)
                entries = [
                    _NsEntry(rr.target, glue.get(rr.target) or self._known_addresses(rr.target))
                    for rr in rrset
                ]
                if cut == self.domain or self.shared is None:
                    # The measured referral is never remembered: no TTL to work out.
                    return _Step("referral", zone, response, cut=cut, servers=entries)
                targets = {rr.target for rr in rrset}
                ttl = min(
                    [rrset.ttl]
                    + [
                        g.ttl
                        for g in response.additional
                        if g.rdtype in _ADDRESS_TYPES
                        and g.name in targets
                        and g.name.is_subdomain(zone)
                    ]
                )
                return _Step(
                    "referral",
                    zone,
                    response,
                    cut=cut,
                    servers=entries,
                    glue={n: a for n, a in glue.items() if n in targets},
                    ttl=ttl,
                )
            return _Step("failed", zone, reason="referral")
        return _not_authoritative(zone)

    def _learn_glue(
        self, response: dns.message.Message, zone: dns.name.Name, *, share: bool = True
    ) -> dict[dns.name.Name, tuple[_Server, ...]]:
        """Addresses from the additional section, only for names inside `zone` (bailiwick);
        with `share`, into the shared cache too."""
        glue: dict[dns.name.Name, tuple[_Server, ...]] = {}
        for rdtype in _ADDRESS_TYPES:  # A first: the address a walk asks first
            for rrset in response.additional:
                # (dnspython merges the records of one name and type into one RRset.)
                if rrset.rdtype != rdtype or not rrset.name.is_subdomain(zone):
                    continue
                name = rrset.name
                unique = tuple(dict.fromkeys((rr.address, 53) for rr in rrset))
                self.addresses.setdefault(_akey(name, rdtype), _Found(unique, True))
                glue[name] = glue.get(name, ()) + unique
                if share and self.shared is not None:
                    self.shared.put_addresses(name, rdtype, unique, rrset.ttl, rank=RANK_GLUE)
        return glue

    def _known_addresses(self, name: dns.name.Name) -> tuple[_Server, ...] | None:
        known = [self._address_entry(name, t) for t in _ADDRESS_TYPES]
        if all(k is None for k in known):
            return None
        return tuple(a for k in known if k is not None for a in k.addresses)

    def _address_entry(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Found | None:
        """What this check knows of `name`'s addresses of one type, else the shared cache."""
        key = _akey(name, rdtype)
        found = self.addresses.get(key)
        if found is None and self.shared is not None:
            cached = self.shared.addresses(name, rdtype)
            if cached is not None:
                found = self.addresses[key] = _Found(cached, True)
        return found

    # -- addresses of NS names ---------------------------------------------------------------

    async def _lookup(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, chain: tuple[dns.name.Name, ...]
    ) -> _Found:
        """Addresses of one type for `name` (following CNAMEs), cached for this check and, from
        authoritative answers in a walk from the root, in the shared cache for their TTL."""
        cached = self._address_entry(name, rdtype)
        if cached is not None:
            return cached
        if len(chain) > _MAX_DEPTH:
            return _Found((), False)
        result = _Found((), True)  # a CNAME chain longer than _MAX_CNAMES: a broken name
        ttl: float | None = None  # how long `result` may be shared (None: not at all)
        current = name
        for _ in range(_MAX_CNAMES):
            if self.resolvers:
                response = await self._recursive(current, rdtype)
                if isinstance(response, str):
                    result = _Found((), False)
                    break
            else:
                step = await self._iterate(current, rdtype, stop_at_cut=False, chain=chain)
                if step.kind == "glue":
                    result = self._address_entry(current, rdtype) or _Found((), False)
                    break
                if step.kind != "answer" or step.response is None:
                    # An authoritative NXDOMAIN is a fact; a failed walk is not.
                    result = _Found((), step.kind == "nxdomain")
                    if step.kind == "nxdomain" and step.response is not None:
                        ttl = _negative_ttl(step.response)
                    break
                response = step.response
            if response.rcode() == dns.rcode.NXDOMAIN:
                result = _Found((), True)
                ttl = _negative_ttl(response)
                break
            addresses, target = _addresses_from(response, current, rdtype)
            if addresses or target is None:
                result = _Found(addresses, True)
                ttl = (
                    _answer_ttl(response, current, rdtype) if addresses else _negative_ttl(response)
                )
                break
            current = target  # a CNAME (RFC 2181 §10.3 forbids it for NS, but be lenient)
        self.addresses[_akey(name, rdtype)] = result
        # In root mode every answer here carried AA from a server of the name's zone (see
        # _classify); answers reached through a CNAME are not shared (their TTLs differ).
        if self.shared is not None and ttl is not None and current == name and result.definitive:
            self.shared.put_addresses(name, rdtype, result.addresses, ttl, rank=RANK_ANSWER)
        return result

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
            zone = dnsquery.soa_zone(response, name)
            if zone is None:
                if name == dns.name.root:
                    # Even the root zone "does not exist": the resolver (or the network in
                    # front of it) makes answers up.
                    return "not_authoritative"
                name = name.parent()
        response = await self._recursive(zone, dns.rdatatype.NS)
        if isinstance(response, str):
            return response
        names = ns_targets(response.answer, zone)
        if not names:
            return "no_parent"
        # The resolver is trusted, so any addresses it volunteers are usable.
        self._learn_glue(response, dns.name.root)
        return zone, [_NsEntry(n, self._known_addresses(n)) for n in names]

    async def _recursive(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message | CheckError:
        """One RD=1 question to the configured resolvers, trying the next one on failure."""
        reasons: list[str] = []
        # A resolver that timed out once in this check is asked last, not first, every time.
        ordered = sorted(self.resolvers, key=lambda server: server in self.silent)
        for server in ordered:
            reply = await self._send(
                qname, rdtype, server, rd=True, tcp_retry=False, kind="resolver"
            )
            if reply.response is None:
                assert reply.failure is not None
                reasons.append(reply.failure)
                if reply.failure == "timeout":
                    self.silent.add(server)
                continue
            rcode = reply.response.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return reply.response
            reasons.append(rcode_reason(rcode))
        return _check_error(worst(reasons))

    # -- one DNS message ---------------------------------------------------------------------

    async def _send(
        self,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        server: _Server,
        *,
        rd: bool,
        tcp_retry: bool,
        kind: ServerKind,
    ) -> _Reply:
        """One question to one server: UDP (TCP on TC=1), with `tcp_retry` one TCP try after a
        UDP timeout, one retry without EDNS after FORMERR. Failures become `_Reply.failure`."""
        host, port = server
        if not self._routable(host):
            return _Reply(None, "no_route")

        async def transport(q: dns.message.Message, tcp: bool) -> dns.message.Message:
            return await self._message(q, host, port, tcp=tcp, kind=kind)

        try:
            response = await dnsquery.ask(transport, qname, rdtype, rd=rd, tcp_retry=tcp_retry)
        except dns.exception.Timeout as exc:
            self._log_failure(qname, rdtype, host, "timeout", exc)
            return _Reply(None, "timeout")
        except OSError as exc:
            self._log_failure(qname, rdtype, host, "error", exc)
            if exc.errno in NO_ROUTE_ERRNOS:
                self.routes[host] = False
                if self.shared is not None:
                    self.shared.put_route(host, False)
                return _Reply(None, "no_route")
            # A refused TCP connection after a UDP timeout: still nothing answered.
            return _Reply(None, "timeout" if tcp_retry else "error")
        except (dns.exception.DNSException, EOFError, ValueError) as exc:
            self._log_failure(qname, rdtype, host, "error", exc)
            return _Reply(None, "timeout" if tcp_retry else "error")
        return _Reply(response)

    async def _message(
        self, q: dns.message.Message, host: str, port: int, *, tcp: bool, kind: ServerKind
    ) -> dns.message.Message:
        """Send one message within the query budget and report its outcome exactly once."""
        async with self.sem:
            if self.sent >= QUERY_BUDGET:
                self.stopped = True
                if not self.exhausted and self.run_task is not None:
                    self.run_task.cancel()  # ends the check now (see `check`)
                self.exhausted = True
            if self.stopped:
                raise _Stopped
            self.sent += 1
            return await dnsquery.exchange(
                q,
                host,
                port,
                tcp=tcp,
                wait=self.timeout,
                report=functools.partial(self._count, kind=kind),
            )

    def _routable(self, host: str) -> bool:
        known = self.routes.get(host)
        if known is None and self.shared is not None:
            known = self.shared.route(host)
        if known is None:
            known = _has_route(host)
            if self.shared is not None:
                self.shared.put_route(host, known)
        self.routes[host] = known
        return known

    def _count(self, outcome: QueryOutcome, kind: ServerKind) -> None:
        self.queries += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.on_query is not None:
            self.on_query(outcome)
        if self.on_query_kind is not None:
            self.on_query_kind(outcome, kind)

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


def _has_route(host: str) -> bool:
    """Can this host send to `host` at all? A UDP connect() only consults the routing table,
    no packet leaves. Errors other than "no route" are left to the real query."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return True
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((host, 53))
    except OSError as exc:
        return exc.errno not in NO_ROUTE_ERRNOS
    return True


def _server(text: str) -> _Server:
    host, port = split_host_port(text, 53)
    return host, port


@functools.lru_cache(maxsize=64)
def _servers(texts: tuple[str, ...]) -> tuple[_Server, ...]:
    """The configured addresses, parsed once per configuration rather than once per check."""
    return tuple(_server(s) for s in texts)


def _describe(entry: _NsEntry, address: _Server) -> str:
    host = address[0] if address[1] == 53 else f"{address[0]}:{address[1]}"
    return f"{_display(entry.name)} ({host})" if entry.name is not None else host


def _not_authoritative(zone: dns.name.Name) -> _Step:
    return _Step("failed", zone, reason="not_authoritative")


def _is_negative(step: _Step, qname: dns.name.Name) -> bool:
    """An authoritative NXDOMAIN, or authoritative NODATA for NS (the name exists in the parent
    but is no zone cut)."""
    if step.kind == "nxdomain":
        return True
    return (
        step.kind == "answer"
        and step.response is not None
        and not ns_targets(step.response.answer, qname)
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
            return tuple(dict.fromkeys(found)), None
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


def _answer_ttl(
    response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> float | None:
    ttls = [r.ttl for r in response.answer if r.name == name and r.rdtype == rdtype]
    return min(ttls) if ttls else None


def _negative_ttl(response: dns.message.Message) -> float | None:
    """RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM); without a SOA it
    says nothing about how long it holds, so it is not shared."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return None


def _akey(name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> tuple[NameKey, int]:
    return name_key(name), int(rdtype)


def _flight_key(
    zone: dns.name.Name, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[object, ...]:
    """Questions to `zone` that one referral answers alike: those towards the same child of
    `zone` (the root asked for a.test and b.test both refers to test.). A question about that
    child itself is keyed with its type too (its answer is about that name and type)."""
    below = len(qname) - len(zone)
    key = name_key(qname)  # labels, leftmost first
    towards = key[below - 1 :] if below > 0 else key
    return (name_key(zone), towards, int(rdtype) if below <= 1 else None)


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
    names = {
        _display(rr.target)
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.NS and rrset.name == domain
        for rr in rrset
    }
    if not names:
        # AA but no apex NS: the server is authoritative for some enclosing zone, not this one.
        return "not_authoritative"
    return names


_CHECK_ERRORS: dict[str | None, CheckError] = {
    "timeout": "timeout",
    "servfail": "servfail",
    "refused": "refused",
    "no_parent": "no_parent",
    "unreachable": "unreachable",
    "not_authoritative": "not_authoritative",
    "no_route": "no_route",
    # No address for any server of a zone on the way down: the parent cannot be reached.
    "no_address": "no_parent",
}


def _check_error(reason: str | None) -> CheckError:
    return _CHECK_ERRORS.get(reason, "invalid_response")
