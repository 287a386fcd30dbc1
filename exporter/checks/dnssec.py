"""The DNSSEC check: the parent's DS vs the keys and signatures the child's servers serve, the
parent's glue vs the child's own addresses, and SOA serial drift across the child's servers
(exporter/dnssecprobe.py measures, exporter/dnssec.py judges).

It runs in its own lane every `dns.dnssec_interval` (15m by default), sharing the delegation
check's zone-cut cache so that the root and the TLD servers are not asked again for it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TypeVar

from exporter import dnssec, dnssecprobe
from exporter.checks import Check, Context, Result
from exporter.store import DnssecResult, DomainStatus
from exporter.zonecache import ZoneCache

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class DnssecCheck(Check):
    name = "dnssec"
    after = ("rdap",)

    def __init__(self, ctx: Context, zones: ZoneCache | None = None) -> None:
        super().__init__(ctx)
        self.zones = zones if zones is not None else ZoneCache()

    def interval(self) -> float:
        return self.ctx.config.dns.dnssec_interval

    async def run(self, domain: str) -> Result:
        async with self.ctx.limiter:
            probe = await dnssecprobe.check_dnssec(
                domain,
                self.ctx.config.dns,
                on_query_kind=self.ctx.metrics.record_dns,
                cache=self.zones,
            )
        _log(domain, probe)
        if probe.delegated is None:
            # The parent was not reached: the last good values stay, check_success 0 says so.
            return Result(ok=False, error=probe.error or "invalid_response")
        now = self.ctx.now()

        def land(s: DomainStatus) -> DomainStatus:
            return with_registry_verdict(replace(s, dnssec=_merge(s.dnssec, probe, now)), now)

        return Result(ok=probe.error is None, error=probe.error, land=land)

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        if after.dnssec is None:
            return
        if kind in ("rdap", "whois", "config"):
            # A new registry read may confirm (or settle) a disagreement at once.
            now = self.ctx.now()
            self.ctx.store.update(domain, lambda s: with_registry_verdict(s, now))
            after = self.ctx.store.get(domain) or after
        result = after.dnssec
        old = before.dnssec if before else None
        if result is None:
            return
        if result.registry_disagrees and not (old and old.registry_disagrees):
            reg = after.rdap.registration if after.rdap else None
            log.warning(
                "DNSSEC registry disagreement: domain=%s parent_signed=%s registry_signed=%s",
                domain,
                result.signed,
                reg.dnssec_signed if reg else None,
            )
        if (
            kind in ("dnssec", "dns")
            and result.registry_disagree_since is not None
            and not result.registry_disagrees
        ):
            # Unconfirmed: the registry's last read may predate a DS change. Read it again,
            # paced to once per rdap.hold_interval per domain (shared with the nameserver
            # verdict's re-reads); a paced request is retried at the next DNS check.
            self.ctx.refresh(domain, "rdap", "dnssec_registry_disagrees")


def _merge(prev: DnssecResult | None, probe: dnssecprobe.DnssecProbe, now: float) -> DnssecResult:
    """The result to store. A check that failed part-way keeps the last good value of whatever
    it could not measure this time (consistent with what it did measure)."""
    if not probe.delegated:
        return DnssecResult(parent_zone=probe.parent_zone, measured_at=now)
    fresh = DnssecResult(
        parent_zone=probe.parent_zone,
        signed=probe.signed,
        ds_mismatch=probe.ds_mismatch,
        signature_expiry=float(probe.signature_expiry)
        if probe.signature_expiry is not None
        else None,
        serial_drift=probe.serial_drift,
        glue_mismatch=dict(probe.glue_mismatch),
        registry_disagrees=prev.registry_disagrees if prev else None,
        registry_disagree_since=prev.registry_disagree_since if prev else None,
        measured_at=now,
    )
    if probe.error is None or prev is None:
        return fresh
    signed = fresh.signed if fresh.signed is not None else prev.signed
    kept = replace(
        fresh,
        signed=signed,
        ds_mismatch=_first(fresh.ds_mismatch, prev.ds_mismatch),
        signature_expiry=_first(fresh.signature_expiry, prev.signature_expiry),
        serial_drift=_first(fresh.serial_drift, prev.serial_drift),
        glue_mismatch=fresh.glue_mismatch or prev.glue_mismatch,
    )
    if not signed:
        # Unsigned (or unknown): no chain to judge, whatever an earlier check said.
        kept = replace(kept, ds_mismatch=None, signature_expiry=None)
    return kept


def _first(value: _T | None, fallback: _T | None) -> _T | None:
    return value if value is not None else fallback


def with_registry_verdict(s: DomainStatus, now: float) -> DomainStatus:
    """`s` with domain_dnssec_registry_disagrees recomputed from its DNSSEC result and its
    registration (see dnssec.registry_verdict)."""
    result = s.dnssec
    if result is None:
        return s
    reg = s.rdap.registration if s.rdap else None
    verdict, since = dnssec.registry_verdict(
        signed=result.signed,
        registry_signed=reg.dnssec_signed if reg else None,
        registry_read_at=s.rdap.read_at if s.rdap else None,
        previous=result.registry_disagrees,
        disagree_since=result.registry_disagree_since,
        now=now,
    )
    if (verdict, since) == (result.registry_disagrees, result.registry_disagree_since):
        return s
    return replace(
        s, dnssec=replace(result, registry_disagrees=verdict, registry_disagree_since=since)
    )


def _log(domain: str, probe: dnssecprobe.DnssecProbe) -> None:
    if probe.error is not None:
        log.warning(
            "DNSSEC check failed: domain=%s parent_zone=%s reason=%s queries=%d",
            domain,
            probe.parent_zone,
            probe.error,
            probe.queries,
        )
    if probe.ds_mismatch:
        log.warning(
            "DNSSEC DS mismatch: domain=%s servers=%s ds=%s",
            domain,
            ",".join(probe.mismatched),
            " | ".join(probe.ds) or "-",
        )
    for name, bad in sorted(probe.glue_mismatch.items()):
        if bad:
            log.warning("glue mismatch: domain=%s nameserver=%s", domain, name)
    if probe.serial_drift:
        log.warning(
            "SOA serial drift: domain=%s drift=%d serials=%s",
            domain,
            probe.serial_drift,
            ",".join(f"{v.label}={v.serial}" for v in probe.servers if v.serial is not None),
        )
    for view in probe.servers:
        if view.failure is not None:
            log.debug(
                "DNSSEC check: domain=%s server=%s failure=%s", domain, view.label, view.failure
            )
