"""The nameserver-domain check: is the registration behind each of a domain's nameservers alive?

A delegation to `ns1.example-dns.net` is only as safe as the registration of `example-dns.net`.
When that lapses, whoever registers it next answers for every domain delegated to its hosts
("sitting ducks" / dangling delegations: over a million domains exposed in 2024, tens of
thousands hijacked). Registry, parent and child still agree, so no mismatch check sees it.

For each nameserver host of a domain -- the parent's delegation, or the registry's set while the
parent was not measured -- the check reads the registration of the host's registrable domain
(Public Suffix List, exporter/suffixes.py) through the same path as a monitored domain:
`plan_source` (RDAP, else WHOIS), the same clients and per-server pacing, and the same 404 rule
(unregistered only once a second not-found at least `rdap.hold_interval` later confirms it).

Shared and bounded. A nameserver domain is read at most once per `rdap.interval` (once per
`rdap.hold_interval` while unhealthy, unconfirmed or failing) however many monitored domains use
it: results are cached per nameserver domain, concurrent asks wait for the one lookup in flight,
and every domain using it is re-run when its verdict changes. At most MAX_NAMESERVER_DOMAINS per
domain are judged. A nameserver domain that is itself monitored is judged on its own record,
without a lookup of its own; the domain itself (in-bailiwick servers such as `ns1.example.com`
for `example.com`) is skipped, since its own health is what every other alert watches.

`domain_nameserver_domain_healthy{nameserver_domain}`: 0 when unregistered (confirmed), expired
(paid-until date past), on hold, or pending delete / redemption / pending restore; 1 when
registered and none of those; absent when unknown.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from exporter import verdicts
from exporter.checks import JITTER, Check, Context, Result, jittered
from exporter.checks.registration import plan_source
from exporter.rdap import RdapClient
from exporter.registration import Registration
from exporter.store import DomainStatus, NsDomainResult, NsDomainVerdict
from exporter.suffixes import registrable_domain
from exporter.whois import WhoisClient

log = logging.getLogger(__name__)

# A delegation names a handful of providers at most; a hostile one naming hundreds must not cost
# hundreds of registry lookups (nor series).
MAX_NAMESERVER_DOMAINS = 8
SKIPPED = Result(ok=True, record=False)


@dataclass(frozen=True)
class _Entry:
    """The cached registration verdict of one nameserver domain."""

    expires: float  # Unix time after which it is read again
    healthy: bool | None
    reason: str
    error: str | None = None  # the last lookup failed (the verdict above is the last good one)
    first_404: float | None = None  # an unconfirmed (or confirmed) not-found began here


def registration_health(
    registered: bool | None, reg: Registration | None, now: float
) -> tuple[bool | None, str]:
    """(healthy, reason) of a nameserver domain's registration; None when unknown."""
    if registered is False:
        return False, "unregistered"
    if registered is None or reg is None:
        return None, "unknown"
    if reg.on_hold:
        return False, "hold"
    if reg.dying:
        return False, "pending_delete"
    paid_until = reg.paid_until
    if paid_until is not None and paid_until < datetime.fromtimestamp(now, UTC):
        return False, "expired"
    return True, "ok"


def nameserver_hosts(status: DomainStatus) -> tuple[str, ...]:
    """The parent's delegation when measured, else the registry's nameserver set."""
    dns = status.dns
    if dns is not None and dns.delegated is True and dns.parent:
        return tuple(dns.parent)
    reg = status.rdap.registration if status.rdap is not None else None
    return tuple(reg.nameservers or ()) if reg is not None else ()


def nameserver_domains(domain: str, status: DomainStatus) -> tuple[str, ...]:
    """Registrable domains of the nameserver hosts, sorted, without `domain` itself."""
    found = {registrable_domain(host) for host in nameserver_hosts(status)}
    return tuple(sorted(n for n in found if n is not None and n != domain))


class NameserverDomainsCheck(Check):
    name = "nsdomain"
    after = ("rdap", "dns")

    def __init__(self, ctx: Context, rdap: RdapClient, whois: WhoisClient | None = None) -> None:
        super().__init__(ctx)
        self.rdap = rdap
        self.whois = whois
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self._names_of: dict[str, tuple[str, ...]] = {}  # domain -> its nameserver domains
        self._users: dict[str, set[str]] = {}  # nameserver domain -> domains using it

    def interval(self) -> float:
        return self.ctx.config.rdap.interval

    def next_interval(self, status: DomainStatus | None) -> float:
        """The configured interval, or sooner: when a cached verdict this domain uses is due
        (a hold_interval re-read of an unhealthy, unconfirmed or failed nameserver domain)."""
        wait = jittered(self.interval())
        now = self.ctx.now()
        for name in self._names_of.get(status.name, ()) if status is not None else ():
            entry = self._cache.get(name)
            if entry is not None:
                # Jitter only upwards: a confirming 404 must come a full hold_interval later.
                due = max(entry.expires - now, 1.0) * random.uniform(1.0, 1.0 + JITTER)
                wait = min(wait, due)
        return wait

    def lane(self, domain: str) -> tuple[str, int]:
        return self.name, self.ctx.config.concurrency

    def forget(self, domains: set[str]) -> None:
        self._names_of = {d: n for d, n in self._names_of.items() if d in domains}
        self._rebuild_users()
        self._cache = {n: e for n, e in self._cache.items() if n in self._users}

    async def run(self, domain: str) -> Result:
        status = self.ctx.store.get(domain)
        if status is None:
            return SKIPPED
        names = nameserver_domains(domain, status)
        if len(names) > MAX_NAMESERVER_DOMAINS:
            log.info(
                "nameserver domains capped: domain=%s found=%d judged=%d",
                domain,
                len(names),
                MAX_NAMESERVER_DOMAINS,
            )
            names = names[:MAX_NAMESERVER_DOMAINS]
        self._use(domain, names)
        if not names:
            self._clear(domain, status)
            return SKIPPED  # every nameserver in-bailiwick (or none known): nothing to judge
        entries = await asyncio.gather(*(self._entry(name) for name in names))
        judged = tuple(
            NsDomainVerdict(name, entry.healthy, entry.reason)
            for name, entry in zip(names, entries, strict=True)
        )
        failure = next((entry.error for entry in entries if entry.error), None)
        result = NsDomainResult(judged)
        return Result(ok=failure is None, error=failure, land=lambda s: replace(s, nsdomain=result))

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        if kind in ("dns", "rdap", "whois", "config"):
            want = nameserver_domains(domain, after)[:MAX_NAMESERVER_DOMAINS]
            have = self._names_of.get(domain)
            if have is None and after.nsdomain is not None:
                have = tuple(v.nameserver_domain for v in after.nsdomain.verdicts)  # restored
            if want != (have or ()):
                # A new delegation: judge its nameserver domains now, not an interval later.
                self.ctx.request(domain, self.name)
        if kind in ("rdap", "whois") and domain in self._users:
            # A monitored domain that is also a nameserver domain: its users follow its record.
            now = self.ctx.now()
            old = before.rdap if before is not None else None
            new = after.rdap
            old_health = registration_health(old.registered, old.registration, now) if old else None
            new_health = registration_health(new.registered, new.registration, now) if new else None
            if old_health != new_health:
                for user in sorted(self._users[domain]):
                    self.ctx.request(user, self.name)

    # --- the shared cache ------------------------------------------------------------------

    async def _entry(self, name: str) -> _Entry:
        now = self.ctx.now()
        monitored = self.ctx.store.get(name)
        if monitored is not None:
            # Watched in its own right: its record is fresher than any lookup of ours, and
            # reading it costs its registry nothing. Unknown until its own check has read it.
            rdap = monitored.rdap
            if rdap is None:
                return _Entry(now, None, "unknown")
            healthy, reason = registration_health(rdap.registered, rdap.registration, now)
            return _Entry(now, healthy, reason)
        cached = self._cache.get(name)
        if cached is not None and cached.expires > now:
            return cached
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.ensure_future(self._refresh(name, cached))
            self._inflight[name] = task
            task.add_done_callback(lambda _done: self._inflight.pop(name, None))
        # Shielded: one waiting run being cancelled must not cancel the others' lookup.
        return await asyncio.shield(task)

    async def _refresh(self, name: str, cached: _Entry | None) -> _Entry:
        settings = self.ctx.config.rdap
        plan = plan_source(name, self.rdap, self.whois, None)
        if plan.source == "rdap":
            found = await self.rdap.lookup(name)
            error, detail = found.error, found.detail
            registered, registration = found.registered, found.registration
        elif plan.source == "whois" and plan.whois is not None and self.whois is not None:
            answer = await self.whois.lookup(name, plan.whois)
            error, detail = answer.error, answer.detail
            registered, registration = answer.registered, answer.registration
        else:
            # No registry source at all: unknown, and nothing this check could retry or fix.
            log.debug("nameserver domain has no registry source: nameserver_domain=%s", name)
            entry = _Entry(self.ctx.now() + jittered(settings.interval), None, "unsupported_tld")
            self._cache[name] = entry
            return entry
        now = self.ctx.now()
        hold = settings.hold_interval
        if error is not None:
            log.warning(
                "nameserver domain lookup failed: nameserver_domain=%s reason=%s error=%s",
                name,
                error,
                detail,
            )
            # The last good verdict stands (domain_check_success 0 says it is stale).
            entry = _Entry(
                now + hold,
                cached.healthy if cached else None,
                cached.reason if cached else "unknown",
                error=error,
                first_404=cached.first_404 if cached else None,
            )
        elif registered is False:
            first = cached.first_404 if cached and cached.first_404 is not None else now
            if verdicts.registration_confirmed_gone(
                first_404=first, now=now, hold_interval=hold, parent_nxdomain=False
            ):
                entry = _Entry(now + hold, False, "unregistered", first_404=first)
            else:
                # One not-found is not a deletion: the previous verdict stands (absent if
                # none) until a second one a hold_interval later confirms it.
                log.warning(
                    "nameserver domain not found, not yet confirmed: nameserver_domain=%s "
                    "reading again in %.0fs",
                    name,
                    hold,
                )
                entry = _Entry(
                    now + hold,
                    cached.healthy if cached else None,
                    cached.reason if cached else "unknown",
                    first_404=first,
                )
        else:
            healthy, reason = registration_health(registered, registration, now)
            ttl = jittered(settings.interval) if healthy else hold
            entry = _Entry(now + ttl, healthy, reason)
        self._cache[name] = entry
        if cached is None or (cached.healthy, cached.reason) != (entry.healthy, entry.reason):
            self._changed(name, entry)
        return entry

    def _changed(self, name: str, entry: _Entry) -> None:
        if entry.healthy is False:
            log.warning(
                "nameserver domain unhealthy: nameserver_domain=%s reason=%s domains=%s",
                name,
                entry.reason,
                ",".join(sorted(self._users.get(name, ()))[:10]),
            )
        # Every domain using it follows at once (those not running right now).
        for user in sorted(self._users.get(name, ())):
            self.ctx.request(user, self.name)

    # --- bookkeeping -------------------------------------------------------------------------

    def _use(self, domain: str, names: tuple[str, ...]) -> None:
        if self._names_of.get(domain) == names:
            return
        for old in self._names_of.get(domain, ()):
            users = self._users.get(old)
            if users is not None:
                users.discard(domain)
                if not users:
                    del self._users[old]
        self._names_of[domain] = names
        for name in names:
            self._users.setdefault(name, set()).add(domain)

    def _rebuild_users(self) -> None:
        self._users = {}
        for domain, names in self._names_of.items():
            for name in names:
                self._users.setdefault(name, set()).add(domain)

    def _clear(self, domain: str, status: DomainStatus) -> None:
        """No nameserver domain to judge (any more): no series, no check state."""
        state = status.checks.get(self.name)
        if status.nsdomain is None and (state is None or state.success is None):
            return

        def drop(s: DomainStatus) -> DomainStatus:
            checks = dict(s.checks)
            if self.name in checks:
                checks[self.name] = replace(checks[self.name], success=None, error=None, failures=0)
            return replace(s, nsdomain=None, checks=checks)

        self.ctx.store.update(domain, drop)
