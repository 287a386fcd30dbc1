"""The registration check: the registry's RDAP record of a domain (expiry, statuses, registrar,
nameservers, contacts), and the fast path from what DNS sees to an RDAP re-read.

A registry 404 is a measurement, but one 404 is not a deletion: it counts once a second 404 a
`rdap.hold_interval` later, or an authoritative NXDOMAIN at the parent, confirms it.

Where a registration is read from is decided here for both registration checks (`plan_source`):
RDAP when the registry has a service (IANA bootstrap, the curated table exporter/data/cctlds.json,
`rdap.servers`), else WHOIS (checks/whois.py) when a server is known, else the manual
`domains[].expires` alone. The check that does not serve a domain steps aside and records nothing;
the 404 confirmation and re-read pacing below are shared with the WHOIS check.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from exporter import changes, verdicts
from exporter.capacity import RdapCycles
from exporter.cctlds import builtin_table
from exporter.checks import JITTER, Check, Context, Result, jittered
from exporter.config import Config, DomainConfig, RdapSettings
from exporter.rdap import RdapClient
from exporter.store import DnsResult, DomainStatus, RdapResult
from exporter.whois import WhoisClient, WhoisServer

log = logging.getLogger(__name__)

BOOTSTRAP_REFRESH = 86400.0
BOOTSTRAP_RETRY = 3600.0


class RegistrationCheck(Check):
    name = "rdap"

    def __init__(self, ctx: Context, client: RdapClient, whois: WhoisClient | None = None) -> None:
        super().__init__(ctx)
        self.client = client
        self.whois = whois
        # The curated table's RDAP services outside the bootstrap (e.g. SWITCH's for .ch), under
        # rdap.servers. Set on the shared client, so mail-domain lookups use them too.
        client.settings = with_builtin_rdap(client.settings)
        rdap = ctx.config.rdap
        # What one cycle of this replica's domains costs each RDAP server (capacity metrics).
        self.cycles = RdapCycles(rdap.requests_per_second, rdap.interval, rdap.follow_registrar)
        self._server_of: dict[str, str] = {}  # domain -> its registry's server ('' if none)

    def interval(self) -> float:
        return self.ctx.config.rdap.interval

    def next_interval(self, status: DomainStatus | None) -> float:
        return registration_interval(self.ctx, status)

    def lane(self, domain: str) -> tuple[str, int]:
        # The lane only orders a registry's domains; how many requests one host sees at once
        # is the RDAP client's per-host pacer's job, per request. Holding a lane slot for a
        # whole lookup let a slow registrar referral starve its registry's domains.
        return "rdap:" + self.client.server_key(domain), self.ctx.config.concurrency

    async def start(self) -> None:
        await self._load_bootstrap()
        self.ctx.spawn(self._bootstrap_refresher())

    async def reconfigure(self, config: Config) -> None:
        before = self.client.settings
        await self.client.reconfigure(with_builtin_rdap(config.rdap))
        rdap = config.rdap
        self.cycles.configure(rdap.requests_per_second, rdap.interval, rdap.follow_registrar)
        after = self.client.settings
        if (before.servers, before.bootstrap, before.allow_http) != (
            after.servers,
            after.bootstrap,
            after.allow_http,
        ):
            self._server_of = {}  # domains may have other servers: forget() looks them up again

    def forget(self, domains: set[str]) -> None:
        # Called with the full domain set after every config sync (and /probe's transient
        # domains): each server's domains are recounted here, so a scrape only divides. A name
        # seen before keeps its server: server_key costs ~2 µs, 0.25 s for 100,000 names.
        known, key = self._server_of, self.client.server_key
        if not known:  # the first sync: every name is new
            self._server_of = self._servers(domains)
        else:
            self._server_of = {d: known[d] if d in known else key(d) for d in domains}
        self._count_servers()
        self.cycles.forget(domains)

    def _count_servers(self) -> None:
        self.cycles.set_domains(self._server_of.values())
        self.cycles.log_changes()

    async def run(self, domain: str) -> Result:
        plan = plan_source(domain, self.client, self.whois, self.ctx.domain(domain))
        note_plan(self.ctx, domain, plan)
        if plan.source not in (None, "rdap"):
            step_aside(self.ctx, domain, self.name)
            return Result(ok=True, record=False)
        result = await self.client.lookup(domain)
        if not result.success:
            log.warning(
                "RDAP check failed: domain=%s server=%s reason=%s error=%s",
                domain,
                result.server,
                result.error,
                result.detail,
            )
            return Result(ok=False, error=result.error)
        for warning in result.registration.warnings if result.registration else ():
            log.debug("RDAP data oddity: domain=%s %s", domain, warning)
        now = self.ctx.now()
        if result.registered is False:
            server = result.server

            def gone(s: DomainStatus) -> DomainStatus:
                return replace(s, rdap=not_found_result(self.ctx, s, server, now, self.name))

            return Result(ok=True, land=gone)
        rdap = RdapResult(True, result.server, result.registration, read_at=now)
        return Result(ok=True, land=lambda s: replace(s, rdap=rdap))

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        if kind in (*REGISTRATION_CHECKS, "dns"):
            # New registry or parent data: note a nameserver or registrar change (changes.py).
            changes.observe(self.ctx.store, domain, self.ctx.now())
        if kind in ("rdap", "config"):
            reg = after.rdap.registration if after.rdap else None
            self.cycles.set_registrar(domain, reg.registrar_link if reg else None)
        if kind in REGISTRATION_CHECKS:
            self._log_registration_change(domain, before, after)
        elif kind == "dns" and after.dns is not None:
            self._after_dns(domain, before.dns if before else None, after.dns, after)

    def _log_registration_change(
        self, domain: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        new, old = after.rdap, before.rdap if before else None
        if new is None or new.not_found_since is None:
            return
        if new.registered is False and (old is None or old.registered is not False):
            log.warning(
                "domain not registered (confirmed): domain=%s first_404_age=%.0fs",
                domain,
                self.ctx.now() - new.not_found_since,
            )
        elif new.registered is not False:
            log.warning(
                "RDAP 404 not yet confirmed: domain=%s first_404_age=%.0fs; asking DNS now "
                "and RDAP again in %.0fs",
                domain,
                self.ctx.now() - new.not_found_since,
                self.ctx.config.rdap.hold_interval,
            )
            self.ctx.request(domain, "dns")

    def _after_dns(
        self, domain: str, prev: DnsResult | None, dns: DnsResult, status: DomainStatus
    ) -> None:
        """Turn what DNS saw into an RDAP re-read (the hold / deletion / NS-swap fast path) and
        confirm a pending 404 with an authoritative NXDOMAIN."""
        rdap = status.rdap
        confirm = (
            dns.delegated is False
            and rdap is not None
            and rdap.not_found_since is not None
            and rdap.registered is not False
        )
        trigger: str | None = None
        if dns.delegated is False:
            if prev is not None and prev.delegated is True:
                trigger = "delegation_gone"
            elif (
                (prev is None or prev.delegated is not False)
                and rdap is not None
                and rdap.registered is not False
                and not confirm
            ):
                reg = rdap.registration
                if reg is None or not (reg.on_hold or reg.dying):
                    # First sight of an NXDOMAIN while RDAP says alive and well: its data may
                    # predate the change. Once only: a registered domain that is simply not
                    # delegated must not cost its registry a read every hold_interval.
                    trigger = "parent_nxdomain"
        elif (
            prev is not None and prev.parent and dns.parent and set(prev.parent) != set(dns.parent)
        ):
            trigger = "parent_changed"
        elif dns.delegated is True and prev is not None and prev.delegated is False:
            trigger = "delegation_back"
        if trigger:
            # The re-read goes to whichever check reads this registry (RDAP or WHOIS).
            self.ctx.refresh(domain, rdap.source if rdap else self.name, trigger)
        if confirm and rdap is not None and rdap.not_found_since is not None:
            log.warning("domain not registered (confirmed by parent NXDOMAIN): domain=%s", domain)
            gone = replace(rdap, registered=False, registration=None, read_at=self.ctx.now())
            self.ctx.store.update(domain, lambda s: replace(s, rdap=gone))

    # --- the bootstrap -------------------------------------------------------------------

    async def _load_bootstrap(self) -> bool:
        ok = await self.client.load_bootstrap()
        publication = self.client.bootstrap.publication
        if publication:
            self.ctx.metrics.bootstrap_publication.set(publication.timestamp())
        # A new bootstrap may move domains to other servers.
        self._server_of = self._servers(self._server_of)
        self._count_servers()
        return ok

    def _servers(self, domains: Iterable[str]) -> dict[str, str]:
        """domain -> server_key(domain), one lookup per parent name: the key depends only on
        the labels below the first (RdapClient.base_urls matches suffixes of the parent), and
        100,000 domains have a handful of parents."""
        key = self.client.server_key
        by_parent: dict[str, str] = {}
        out: dict[str, str] = {}
        for domain in domains:
            dot = domain.find(".")
            parent = domain[dot:] if dot >= 0 else ""  # ".example"; "" for a bare label
            server = by_parent.get(parent)
            if server is None:
                server = by_parent[parent] = key(domain)
            out[domain] = server
        return out

    async def _bootstrap_refresher(self) -> None:
        while True:
            await asyncio.sleep(BOOTSTRAP_REFRESH)
            if not await self._load_bootstrap():
                await asyncio.sleep(BOOTSTRAP_RETRY)


def watch_closely(rdap: RdapResult) -> bool:
    """Registrations re-read every rdap.hold_interval: held, dying, gone, or a pending 404."""
    if rdap.registered is not True or rdap.not_found_since is not None:
        return True
    reg = rdap.registration
    return reg is not None and (reg.on_hold or reg.dying)


# --- shared by the registration checks (RDAP here, WHOIS in checks/whois.py) ------------------

REGISTRATION_CHECKS = ("rdap", "whois")


def registration_interval(ctx: Context, status: DomainStatus | None) -> float:
    """Seconds until the next registration read of a domain, whichever protocol reads it."""
    interval = jittered(ctx.config.rdap.interval)
    if status is not None and status.rdap is not None and watch_closely(status.rdap):
        # Re-read often while a hold, a dying status or a 404 is present, so a page clears
        # soon after the registrar lifts it and a deletion is confirmed (or a
        # re-registration seen) within one hold_interval. Jitter only upwards: a
        # confirming 404 must come at least hold_interval after the first.
        hold = ctx.config.rdap.hold_interval * random.uniform(1.0, 1.0 + JITTER)
        interval = min(interval, hold)
    return interval


def not_found_result(
    ctx: Context, status: DomainStatus, server: str | None, now: float, source: str
) -> RdapResult:
    """The registry said "no such domain" (RDAP 404, WHOIS "No match"): the registration as it
    stands after that answer. Confirmed gone only by a second not-found at least
    rdap.hold_interval after the first, or by a fresh authoritative NXDOMAIN at the parent."""
    prev = status.rdap
    first = prev.not_found_since if prev and prev.not_found_since is not None else now
    dns = status.dns
    parent_nxdomain = dns is not None and dns.delegated is False and _dns_fresh(ctx, status)
    if verdicts.registration_confirmed_gone(
        first_404=first,
        now=now,
        hold_interval=ctx.config.rdap.hold_interval,
        parent_nxdomain=parent_nxdomain,
    ):
        return RdapResult(False, server, None, read_at=now, not_found_since=first, source=source)
    if prev is not None and prev.registered is not None:
        return replace(prev, not_found_since=first)  # the last confirmed facts stand
    return RdapResult(None, server, None, not_found_since=first, source=source)


def _dns_fresh(ctx: Context, status: DomainStatus) -> bool:
    last = status.check("dns").last_success
    return last is not None and ctx.now() - last <= 2 * ctx.config.dns.interval


@dataclass(frozen=True)
class SourcePlan:
    source: str | None  # "rdap", "whois", "config" (domains[].expires only), None: nothing
    server: str | None = None  # RDAP base URL or whois://host[:port]
    whois: WhoisServer | None = None


def with_builtin_rdap(settings: RdapSettings) -> RdapSettings:
    """rdap.servers over the curated table's RDAP services (configured entries win)."""
    return replace(settings, servers={**builtin_table().rdap_servers(), **settings.servers})


def plan_source(
    domain: str, rdap: RdapClient, whois: WhoisClient | None, cfg: DomainConfig | None
) -> SourcePlan:
    """Where `domain`'s registration is read: RDAP first (bootstrap, table, rdap.servers), then
    WHOIS (whois.servers, table), then only the manual expiry."""
    allow_http = rdap.settings.allow_http
    urls = [u for u in rdap.base_urls(domain) if u.startswith("https://") or allow_http]
    if urls:
        return SourcePlan("rdap", urls[0])
    server = whois.server_for(domain) if whois is not None else None
    if server is not None:
        return SourcePlan("whois", server.url, server)
    if cfg is not None and cfg.expires is not None:
        return SourcePlan("config")
    return SourcePlan(None)


def note_plan(ctx: Context, domain: str, plan: SourcePlan) -> None:
    """Record where the registration is read from (what `check` shows even after a failure)."""
    status = ctx.store.get(domain)
    if status is None or (status.registry_source, status.registry_server) == (
        plan.source,
        plan.server,
    ):
        return
    ctx.store.update(
        domain, lambda s: replace(s, registry_source=plan.source, registry_server=plan.server)
    )


def step_aside(ctx: Context, domain: str, kind: str) -> None:
    """This registration check does not serve `domain` (any more): forget its success or
    error and the registration it read, so nothing stale is exported under its name."""
    status = ctx.store.get(domain)
    if status is None:
        return
    mine = status.rdap is not None and status.rdap.source == kind
    state = status.checks.get(kind)
    if not mine and (state is None or state.success is None):
        return

    def drop(s: DomainStatus) -> DomainStatus:
        checks = dict(s.checks)
        if kind in checks:
            checks[kind] = replace(checks[kind], success=None, error=None, failures=0)
        rdap = None if s.rdap is not None and s.rdap.source == kind else s.rdap
        return replace(s, checks=checks, rdap=rdap)

    ctx.store.update(domain, drop)
