"""The registration check: the registry's RDAP record of a domain (expiry, statuses, registrar,
nameservers, contacts), and the fast path from what DNS sees to an RDAP re-read.

A registry 404 is a measurement, but one 404 is not a deletion: it counts once a second 404 a
`rdap.hold_interval` later, or an authoritative NXDOMAIN at the parent, confirms it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace

from exporter import verdicts
from exporter.checks import JITTER, Check, Context, Result, jittered
from exporter.config import Config
from exporter.rdap import RdapClient, RdapLookup
from exporter.store import DnsResult, DomainStatus, RdapResult

log = logging.getLogger(__name__)

BOOTSTRAP_REFRESH = 86400.0
BOOTSTRAP_RETRY = 3600.0


class RegistrationCheck(Check):
    name = "rdap"

    def __init__(self, ctx: Context, client: RdapClient) -> None:
        super().__init__(ctx)
        self.client = client

    def interval(self) -> float:
        return self.ctx.config.rdap.interval

    def next_interval(self, status: DomainStatus | None) -> float:
        interval = jittered(self.interval())
        if status is not None and status.rdap is not None and watch_closely(status.rdap):
            # Re-read often while a hold, a dying status or a 404 is present, so a page clears
            # soon after the registrar lifts it and a deletion is confirmed (or a
            # re-registration seen) within one hold_interval. Jitter only upwards: a
            # confirming 404 must come at least hold_interval after the first.
            hold = self.ctx.config.rdap.hold_interval * random.uniform(1.0, 1.0 + JITTER)
            interval = min(interval, hold)
        return interval

    def lane(self, domain: str) -> tuple[str, int]:
        # The lane only orders a registry's domains; how many requests one host sees at once
        # is the RDAP client's per-host pacer's job, per request. Holding a lane slot for a
        # whole lookup let a slow registrar referral starve its registry's domains.
        return "rdap:" + self.client.server_key(domain), self.ctx.config.concurrency

    async def start(self) -> None:
        await self._load_bootstrap()
        self.ctx.spawn(self._bootstrap_refresher())

    async def reconfigure(self, config: Config) -> None:
        await self.client.reconfigure(config.rdap)

    async def run(self, domain: str) -> Result:
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
            return Result(ok=True, land=lambda s: replace(s, rdap=self._not_found(s, result, now)))
        rdap = RdapResult(True, result.server, result.registration, read_at=now)
        return Result(ok=True, land=lambda s: replace(s, rdap=rdap))

    def _not_found(self, status: DomainStatus, result: RdapLookup, now: float) -> RdapResult:
        prev = status.rdap
        first = prev.not_found_since if prev and prev.not_found_since is not None else now
        dns = status.dns
        parent_nxdomain = dns is not None and dns.delegated is False and self._dns_fresh(status)
        if verdicts.registration_confirmed_gone(
            first_404=first,
            now=now,
            hold_interval=self.ctx.config.rdap.hold_interval,
            parent_nxdomain=parent_nxdomain,
        ):
            return RdapResult(False, result.server, None, read_at=now, not_found_since=first)
        if prev is not None and prev.registered is not None:
            return replace(prev, not_found_since=first)  # the last confirmed facts stand
        return RdapResult(None, result.server, None, not_found_since=first)

    def _dns_fresh(self, status: DomainStatus) -> bool:
        last = status.check("dns").last_success
        return last is not None and self.ctx.now() - last <= 2 * self.ctx.config.dns.interval

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        if kind == "rdap":
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
            elif rdap is not None and rdap.registered is not False and not confirm:
                reg = rdap.registration
                if reg is None or not (reg.on_hold or reg.dying):
                    # RDAP still says alive and well: its data predates the change.
                    trigger = "parent_nxdomain"
        elif (
            prev is not None and prev.parent and dns.parent and set(prev.parent) != set(dns.parent)
        ):
            trigger = "parent_changed"
        elif dns.delegated is True and prev is not None and prev.delegated is False:
            trigger = "delegation_back"
        if trigger:
            self.ctx.refresh(domain, "rdap", trigger)
        if confirm and rdap is not None and rdap.not_found_since is not None:
            log.warning("domain not registered (confirmed by parent NXDOMAIN): domain=%s", domain)
            gone = RdapResult(
                False,
                rdap.server,
                None,
                read_at=self.ctx.now(),
                not_found_since=rdap.not_found_since,
            )
            self.ctx.store.update(domain, lambda s: replace(s, rdap=gone))

    # --- the bootstrap -------------------------------------------------------------------

    async def _load_bootstrap(self) -> bool:
        ok = await self.client.load_bootstrap()
        publication = self.client.bootstrap.publication
        if publication:
            self.ctx.metrics.bootstrap_publication.set(publication.timestamp())
        return ok

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
