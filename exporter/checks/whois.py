"""The WHOIS check: the registration of a domain whose registry has no RDAP service, read over
port 43 (exporter/whois.py) into the same record the RDAP check fills (`DomainStatus.rdap`, with
`source="whois"`), so expiry, statuses, holds, registrar, the registry's name servers (and with
them the nameserver-mismatch verdict) work the same whichever protocol read them.

It serves exactly the domains `plan_source` gives to WHOIS and steps aside for the rest. A
not-found ("No match!!", "Status: free") is confirmed like an RDAP 404 (`not_found_result`), and
holds and pending 404s are re-read every rdap.hold_interval (`registration_interval`).

It also keeps `DomainStatus.manual_expiry` equal to the domain's `expires:` (every config sync,
and at start-up, after the state file was restored).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from exporter import verdicts
from exporter.checks import Check, Context, Result
from exporter.checks.delegation import with_nameserver_verdict
from exporter.checks.registration import (
    not_found_result,
    note_plan,
    plan_source,
    registration_interval,
    step_aside,
)
from exporter.config import Config
from exporter.rdap import RdapClient
from exporter.store import DomainStatus, RdapResult
from exporter.whois import WhoisClient

log = logging.getLogger(__name__)


class WhoisCheck(Check):
    name = "whois"

    def __init__(self, ctx: Context, rdap: RdapClient, client: WhoisClient) -> None:
        super().__init__(ctx)
        self.rdap = rdap
        self.client = client
        # parent name -> lane key: at start-up every domain without a WHOIS record is due at
        # once (100,000 lane look-ups), and server_for depends only on the parent's labels.
        self._lanes: dict[str, str] = {}

    def interval(self) -> float:
        # Registration data changes as rarely over WHOIS as over RDAP: one setting for both.
        return self.ctx.config.rdap.interval

    def next_interval(self, status: DomainStatus | None) -> float:
        return registration_interval(self.ctx, status)

    def lane(self, domain: str) -> tuple[str, int]:
        # One lane per WHOIS server; the client's pacer allows one query at a time per server.
        dot = domain.find(".")
        parent = domain[dot:] if dot >= 0 else ""  # ".example"; "" for a bare label
        key = self._lanes.get(parent)
        if key is None:
            server = self.client.server_for(domain)
            key = self._lanes[parent] = "whois:" + (server.label if server else "")
        return key, self.ctx.config.concurrency

    async def reconfigure(self, config: Config) -> None:
        self.client.reconfigure(config.whois)
        self._lanes = {}  # whois.servers may have changed

    async def start(self) -> None:
        # After the state file was restored: its manual expiry may predate the config. Compared
        # inline: a method call per record cost 0.2 s at 100k domains to change a handful.
        domain = self.ctx.domain
        for status in self.ctx.store.snapshot():
            cfg = domain(status.name)
            if status.manual_expiry != (cfg.expires if cfg else None):
                self._sync_manual_expiry(status.name, status)

    async def run(self, domain: str) -> Result:
        plan = plan_source(domain, self.rdap, self.client, self.ctx.domain(domain))
        if plan.source != self.name or plan.whois is None:
            step_aside(self.ctx, domain, self.name)
            return Result(ok=True, record=False)
        note_plan(self.ctx, domain, plan)
        server = plan.whois
        result = await self.client.lookup(domain, server)
        if not result.success:
            log.warning(
                "WHOIS check failed: domain=%s server=%s reason=%s error=%s",
                domain,
                server.label,
                result.error,
                result.detail,
            )
            return Result(ok=False, error=result.error)
        now = self.ctx.now()
        if result.registered is False:

            def gone(s: DomainStatus) -> DomainStatus:
                return _owned(
                    replace(s, rdap=not_found_result(self.ctx, s, server.url, now, "whois"))
                )

            return Result(ok=True, land=gone)
        if result.registration is not None and result.registration.expiry is None:
            log.debug("WHOIS answer has no expiry date: domain=%s server=%s", domain, server.label)
        rdap = RdapResult(True, server.url, result.registration, read_at=now, source=self.name)
        return Result(ok=True, land=lambda s: _owned(replace(s, rdap=rdap)))

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        if kind == "config":
            self._sync_manual_expiry(domain, after)
        elif kind == self.name and after.dns is not None:
            # New registry name servers: the mismatch verdict follows at once (the DNS check
            # does this for RDAP reads).
            cfg = self.ctx.domain(domain)
            expected = cfg.nameservers if cfg else ()
            now = self.ctx.now()
            self.ctx.store.update(domain, lambda s: with_nameserver_verdict(s, expected, now))
        elif kind == "dns" and after.dns is not None and after.registry_source == self.name:
            self._reread_on_disagreement(domain, after)

    def _sync_manual_expiry(self, domain: str, status: DomainStatus) -> None:
        cfg = self.ctx.domain(domain)
        expires = cfg.expires if cfg else None
        if status.manual_expiry != expires:
            self.ctx.store.update(domain, lambda s: replace(s, manual_expiry=expires))

    def _reread_on_disagreement(self, domain: str, status: DomainStatus) -> None:
        """The parent's delegation disagrees with the registry's WHOIS name servers: confirm
        with a fresh WHOIS read, as the DNS check asks RDAP for RDAP-read registries."""
        dns = status.dns
        assert dns is not None
        cfg = self.ctx.domain(domain)
        reg = status.rdap.registration if status.rdap else None
        verdict = verdicts.nameserver_verdict(
            parent=dns.parent,
            delegated=dns.delegated,
            expected=cfg.nameservers if cfg else (),
            registry=reg.nameservers if reg else None,
            registry_read_at=status.rdap.read_at if status.rdap else None,
            previous=dns.mismatch,
            disagree_since=dns.disagree_since,
            now=self.ctx.now(),
        )
        if verdict.needs_registry_reread:
            self.ctx.refresh(domain, self.name, "registry_disagrees")


def _owned(s: DomainStatus) -> DomainStatus:
    """WHOIS now reads this registration: an RDAP success or error from before (a TLD that lost
    its RDAP service, or `unsupported_tld` before a WHOIS server was configured) is not
    exported any more."""
    state = s.checks.get("rdap")
    if state is None or state.success is None:
        return s
    return replace(
        s, checks={**s.checks, "rdap": replace(state, success=None, error=None, failures=0)}
    )
