"""The delegation check: what the parent zone publishes for a domain and what its servers say,
judged against the expected and the registry's nameserver sets (verdicts.nameserver_verdict)."""

from __future__ import annotations

import logging
from dataclasses import replace

from exporter import nameservers, verdicts
from exporter.checks import Check, Context, Result
from exporter.store import DnsResult, DomainStatus
from exporter.zonecache import ZoneCache

log = logging.getLogger(__name__)


class DelegationCheck(Check):
    name = "dns"
    after = ("rdap",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # Zone cuts and server addresses shared by every delegation check of this process, so
        # the root and the TLD servers are asked once per TTL, not once per domain (issue 9).
        self.zones = ZoneCache()

    def interval(self) -> float:
        return self.ctx.config.dns.interval

    async def run(self, domain: str) -> Result:
        async with self.ctx.limiter:
            delegation = await nameservers.check_delegation(
                domain,
                self.ctx.config.dns,
                on_query_kind=self.ctx.metrics.record_dns,
                cache=self.zones,
            )
        if delegation.error is not None:
            log.warning(
                "DNS check failed: domain=%s parent_zone=%s reason=%s",
                domain,
                delegation.parent_zone,
                delegation.error,
            )
        if delegation.disagreeing:
            log.warning(
                "parent servers disagree: domain=%s parent_zone=%s disagreeing=%s",
                domain,
                delegation.parent_zone,
                ",".join(delegation.disagreeing),
            )
        for name, why in sorted(delegation.skipped.items()):
            log.debug("nameserver not judged: domain=%s nameserver=%s reason=%s", domain, name, why)
        if delegation.parent is None or delegation.delegated is None:
            # Nothing measured: the last good values stay, check_success 0 says they are stale.
            return Result(ok=False, error=delegation.error)
        # Only servers the parent delegates to can be lame; others were not asked.
        delegated_to = set(delegation.parent)
        lame = {ns: r for ns, r in delegation.lame.items() if ns in delegated_to}
        for ns, reason in sorted(lame.items()):
            if reason is not None:
                log.warning(
                    "lame nameserver: domain=%s nameserver=%s reason=%s", domain, ns, reason
                )
        now = self.ctx.now()
        expected = self._expected(domain)

        def land(s: DomainStatus) -> DomainStatus:
            prev = s.dns
            child = delegation.child
            inconsistent = verdicts.nameserver_inconsistent(delegation.parent, child)
            if child is None and prev is not None and prev.parent == delegation.parent:
                # The children did not answer this time: keep their last good view.
                child, inconsistent = prev.child, prev.inconsistent
            dns = DnsResult(
                parent_zone=delegation.parent_zone,
                parent=delegation.parent,
                child=child,
                delegated=delegation.delegated,
                lame=lame,
                mismatch=prev.mismatch if prev else None,
                inconsistent=inconsistent,
                disagree_since=prev.disagree_since if prev else None,
                measured_at=now,
            )
            return with_nameserver_verdict(replace(s, dns=dns), expected, now)

        return Result(ok=delegation.error is None, error=delegation.error, land=land)

    def _expected(self, domain: str) -> tuple[str, ...]:
        cfg = self.ctx.domain(domain)
        return cfg.nameservers if cfg else ()

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        if after.dns is None:
            return
        if kind in ("rdap", "whois", "config"):
            # New registry data or a new expected set: the verdict follows at once.
            expected = self._expected(domain)
            now = self.ctx.now()
            self.ctx.store.update(domain, lambda s: with_nameserver_verdict(s, expected, now))
            after = self.ctx.store.get(domain) or after
        dns = after.dns
        old = before.dns if before else None
        if dns is None:
            return
        if dns.mismatch and not (old and old.mismatch):
            reg = after.rdap.registration if after.rdap else None
            log.warning(
                "nameserver mismatch: domain=%s parent=%s expected=%s registry=%s",
                domain,
                ",".join(dns.parent or ()),
                ",".join(self._expected(domain)) or "-",
                ",".join(reg.nameservers or ()) if reg else "-",
            )
        if kind == "dns":
            verdict = _verdict(after, self._expected(domain), self.ctx.now())
            if verdict.needs_registry_reread:
                self.ctx.refresh(domain, "rdap", "registry_disagrees")


def _verdict(s: DomainStatus, expected: tuple[str, ...], now: float) -> verdicts.NameserverVerdict:
    dns = s.dns
    assert dns is not None
    rdap = s.rdap
    return verdicts.nameserver_verdict(
        parent=dns.parent,
        delegated=dns.delegated,
        expected=expected,
        registry=rdap.registration.nameservers if rdap and rdap.registration else None,
        registry_read_at=rdap.read_at if rdap else None,
        previous=dns.mismatch,
        disagree_since=dns.disagree_since,
        now=now,
    )


def with_nameserver_verdict(s: DomainStatus, expected: tuple[str, ...], now: float) -> DomainStatus:
    """`s` with domain_nameserver_mismatch recomputed from its parent, registry and expected
    sets (see verdicts.nameserver_verdict)."""
    if s.dns is None:
        return s
    v = _verdict(s, expected, now)
    if (v.mismatch, v.disagree_since) == (s.dns.mismatch, s.dns.disagree_since):
        return s
    return replace(s, dns=replace(s.dns, mismatch=v.mismatch, disagree_since=v.disagree_since))
