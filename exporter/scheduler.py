"""When each check of each domain runs, and how many run at once.

One asyncio loop drives everything. Due checks wait in a heap keyed by the *monotonic* clock (a
wall-clock step backwards must not stall every check); when due, a check joins a *lane*: one lane
per RDAP registry server (so a server that paused us with 429 holds up only its own domains), one
for DNS and one for e-mail. Each lane admits a bounded number of jobs; per-host in-flight caps live
in the RDAP client's pacers (so a registrar referral never holds its registry's slots), and a
global semaphore caps network operations across all lanes. Nothing here runs during a scrape:
results land in the `StatusStore`, which the collector reads.

The verdicts themselves are pure functions in `verdicts.py`; this module decides *when* to measure,
including the fast path that turns a change seen by DNS into an immediate RDAP re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from exporter import mail, nameservers, verdicts
from exporter.config import Config, DomainConfig
from exporter.rdap import RdapClient, RdapLookup
from exporter.registration import Registration
from exporter.selfmetrics import ExporterMetrics
from exporter.store import (
    CheckState,
    ContactVerdict,
    DnsResult,
    DomainStatus,
    EmailResult,
    RdapResult,
    StatusStore,
)

log = logging.getLogger(__name__)

JITTER = 0.1  # each interval is stretched or shrunk by up to 10 % so checks spread out
RETRY_FIRST = 30.0  # first retry after a failure; doubles up to the check's interval
STATE_SAVE_EVERY = 30.0
MAIL_REGISTRATION_TTL = 6 * 3600.0


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass
class _Lane:
    limit: int
    queue: deque[tuple[str, str]] = field(default_factory=deque)
    queued: set[tuple[str, str]] = field(default_factory=set)  # O(1) "already waiting?"
    slots: asyncio.Semaphore | None = None
    worker: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _MailRegistration:
    expires: float
    problem: str | None  # mail_domain_held | mail_domain_expired | mail_domain_unregistered


class Scheduler:
    def __init__(
        self,
        config: Config,
        store: StatusStore,
        rdap: RdapClient,
        metrics: ExporterMetrics,
        limiter: asyncio.Semaphore,
        state_file: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.rdap = rdap
        self.metrics = metrics
        self.state_file = state_file
        self._clock = clock  # Unix time, for what is exported and persisted
        self._mono = monotonic  # for when things run
        self._limiter = limiter
        self._domains: dict[str, DomainConfig] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        # (domain, check) -> seq of its live heap entry; older entries for it are stale.
        self._scheduled: dict[tuple[str, str], int] = {}
        self._seq = itertools.count()
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._mail_verdicts: dict[str, tuple[float, mail.MailVerdict]] = {}
        self._mail_registrations: dict[str, _MailRegistration] = {}
        self._smtp_results: dict[str, tuple[float, bool | None]] = {}
        self._smtp_pacer = mail.SmtpPacer()  # one per process: paces probes per MX host
        # domain -> monotonic time of the last RDAP re-read that a DNS observation asked for.
        self._rdap_refresh_requested: dict[str, float] = {}
        self.ready = False
        self._sync_domains(config)

    # --- configuration -----------------------------------------------------------------------

    def _sync_domains(self, config: Config) -> None:
        self._domains = {d.name: d for d in config.domains}
        # Forget the schedule of removed domains, so that one added back is checked at once.
        self._scheduled = {k: v for k, v in self._scheduled.items() if k[0] in self._domains}
        self._rdap_refresh_requested = {
            k: v for k, v in self._rdap_refresh_requested.items() if k in self._domains
        }
        self.store.sync((d.name, d.labels, d.nameservers) for d in config.domains)
        self.metrics.domains.set(len(config.domains))
        if not config.domains:
            log.warning("no domains configured: nothing is being watched")
        for d in config.domains:
            self._prune_contacts(d.name)
            if d.nameservers:
                # The expected set may have changed: the verdict follows the config at once.
                self._apply_nameserver_verdict(d.name, reread=False)

    async def apply_config(self, config: Config) -> None:
        """Swap in a validated config. Known domains keep their results and schedule; new ones
        are checked as soon as pacing allows; removed ones disappear from /metrics at once."""
        self.config = config
        self._sync_domains(config)
        await self.rdap.reconfigure(config.rdap)
        self._schedule_missing()

    def _interval(self, kind: str) -> float:
        return {
            "rdap": self.config.rdap.interval,
            "dns": self.config.dns.interval,
            "email": self.config.email.interval,
        }[kind]

    # --- the loop ------------------------------------------------------------------------------

    def _push(self, due: float, domain: str, kind: str) -> None:
        seq = next(self._seq)
        heapq.heappush(self._heap, (due, seq, domain, kind))
        self._scheduled[(domain, kind)] = seq  # supersedes any earlier entry
        self._wake.set()

    def _schedule_missing(self) -> None:
        now, mono = self._clock(), self._mono()
        for name in self._domains:
            status = self.store.get(name)
            for kind in ("rdap", "dns", "email"):
                if (name, kind) in self._scheduled:
                    continue
                state = status.check(kind) if status else CheckState()
                # A result restored from the state file counts: no re-check burst on restart.
                # next_due is persisted as Unix time; the heap runs on the monotonic clock.
                delay = state.next_due - now if state.next_due is not None else 0.0
                delay = min(max(delay, 0.0), self._interval(kind))
                self._push(mono + delay, name, kind)

    def request(self, domain: str, kind: str) -> None:
        """Run a check now (used when one check learns that another's data is stale)."""
        if domain in self._domains:
            self._push(self._mono(), domain, kind)

    async def run(self) -> None:
        self._spawn(self._bootstrap_refresher())
        await self.rdap.load_bootstrap()
        if self.rdap.bootstrap.publication:
            self.metrics.bootstrap_publication.set(self.rdap.bootstrap.publication.timestamp())
        if self.state_file:
            self._spawn(self._state_saver())
        self._schedule_missing()
        self.ready = True
        try:
            while not self._stopping.is_set():
                now = self._mono()
                while self._heap and self._heap[0][0] <= now:
                    _due, seq, domain, kind = heapq.heappop(self._heap)
                    if self._scheduled.get((domain, kind)) == seq:
                        del self._scheduled[(domain, kind)]
                        self._dispatch(domain, kind)
                timeout = self._heap[0][0] - now if self._heap else None
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.state_file:
                self._save_state()

    async def check_once(self, domains: list[str]) -> None:
        """Run every check of these domains once, now (the `check` sub-command). RDAP first,
        since the DNS and e-mail checks use what it found."""
        await self.rdap.load_bootstrap()

        async def one(domain: str) -> None:
            await self._check_rdap(domain)
            await asyncio.gather(self._check_dns(domain), self._check_email(domain))

        await asyncio.gather(*(one(d) for d in domains))

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch(self, domain: str, kind: str) -> None:
        if domain not in self._domains:
            return  # removed by a reload
        if kind == "rdap":
            # The lane only orders a registry's domains; how many requests one host sees at
            # once is the RDAP client's per-host pacer's job, per request. Holding a lane slot
            # for a whole lookup let a slow registrar referral starve its registry's domains.
            key = "rdap:" + self.rdap.server_key(domain)
            limit = self.config.concurrency
        else:
            key, limit = kind, self.config.concurrency
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(limit=limit, slots=asyncio.Semaphore(limit))
        if (domain, kind) in lane.queued:
            return
        lane.queue.append((domain, kind))
        lane.queued.add((domain, kind))
        if lane.worker is None or lane.worker.done():
            lane.worker = self._spawn(self._lane_worker(lane))

    async def _lane_worker(self, lane: _Lane) -> None:
        assert lane.slots is not None
        while lane.queue:
            await lane.slots.acquire()
            if not lane.queue:
                lane.slots.release()
                break
            domain, kind = lane.queue.popleft()
            lane.queued.discard((domain, kind))
            self._spawn(self._run_job(domain, kind, lane.slots))

    async def _run_job(self, domain: str, kind: str, slots: asyncio.Semaphore) -> None:
        try:
            if kind == "rdap":
                await self._check_rdap(domain)
            elif kind == "dns":
                await self._check_dns(domain)
            else:
                await self._check_email(domain)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The only catch-all: a bug in one check must not stop the daemon.
            log.exception("check crashed: domain=%s check=%s", domain, kind)
            self._record(domain, kind, ok=False, error="invalid_response", changes={})
        finally:
            slots.release()
            if domain in self._domains and (domain, kind) not in self._scheduled:
                self._push(self._next_due(domain, kind), domain, kind)

    def _next_due(self, domain: str, kind: str) -> float:
        """Monotonic time of the next run; the Unix-time equivalent is persisted."""
        status = self.store.get(domain)
        state = status.check(kind) if status else CheckState()
        interval = _jittered(self._interval(kind))
        if kind == "rdap" and status and status.rdap and _watch_closely(status.rdap):
            # Re-read often while a hold, a dying status or a 404 is present, so a page clears
            # soon after the registrar lifts it and a deletion is confirmed (or a
            # re-registration seen) within one hold_interval. Never earlier than hold_interval:
            # a confirming 404 must come at least that long after the first.
            hold = self.config.rdap.hold_interval * random.uniform(1.0, 1.0 + JITTER)
            interval = min(interval, hold)
        if state.success is False:
            interval = min(interval, _jittered(RETRY_FIRST * 2 ** max(0, state.failures - 1)))
        due = self._clock() + interval
        self.store.update(
            domain,
            lambda s: replace(s, checks={**s.checks, kind: replace(s.check(kind), next_due=due)}),
        )
        return self._mono() + interval

    def _record(
        self, domain: str, kind: str, ok: bool, error: str | None, changes: dict[str, Any]
    ) -> None:
        now = self._clock()

        def change(s: DomainStatus) -> DomainStatus:
            c = s.check(kind)
            if ok:
                c = replace(
                    c, success=True, last_attempt=now, last_success=now, error=None, failures=0
                )
            else:
                c = replace(
                    c, success=False, last_attempt=now, error=error, failures=c.failures + 1
                )
            return replace(s, checks={**s.checks, kind: c}, **changes)

        self.store.update(domain, change)

    # --- RDAP ----------------------------------------------------------------------------------

    async def _check_rdap(self, domain: str) -> None:
        result = await self.rdap.lookup(domain)
        if not result.success:
            log.warning(
                "RDAP check failed: domain=%s server=%s reason=%s error=%s",
                domain,
                result.server,
                result.error,
                result.detail,
            )
            self._record(domain, "rdap", ok=False, error=result.error, changes={})
            return
        for warning in result.registration.warnings if result.registration else ():
            log.debug("RDAP data oddity: domain=%s %s", domain, warning)
        before = self.store.get(domain)
        if before is None:
            return  # removed by a reload while the lookup ran
        now = self._clock()
        if result.registered is False:
            rdap = self._not_found(before, result, now)
        else:
            rdap = RdapResult(
                registered=True,
                server=result.server,
                registration=result.registration,
                read_at=now,
            )
        self._record(domain, "rdap", ok=True, error=None, changes={"rdap": rdap})
        self._prune_contacts(domain)
        self._apply_nameserver_verdict(domain, reread=False)
        if _real_contacts(rdap.registration) != _real_contacts(
            before.rdap.registration if before.rdap else None
        ):
            # New or changed published mailboxes: judge them now, not an e-mail interval later.
            self.request(domain, "email")

    def _not_found(self, before: DomainStatus, result: RdapLookup, now: float) -> RdapResult:
        """A registry 404. One 404 is not a deletion (a registry's replica can lag, a
        registration can be seconds old): it counts once confirmed by a second 404 a
        hold_interval later or by an authoritative NXDOMAIN at the parent."""
        prev = before.rdap
        first = prev.not_found_since if prev and prev.not_found_since is not None else now
        dns = before.dns
        parent_nxdomain = dns is not None and dns.delegated is False and self._dns_fresh(before)
        if verdicts.registration_confirmed_gone(
            first_404=first,
            now=now,
            hold_interval=self.config.rdap.hold_interval,
            parent_nxdomain=parent_nxdomain,
        ):
            if prev is None or prev.registered is not False:
                log.warning(
                    "domain not registered (confirmed): domain=%s first_404_age=%.0fs "
                    "parent_nxdomain=%s",
                    before.name,
                    now - first,
                    parent_nxdomain,
                )
            return RdapResult(False, result.server, None, read_at=now, not_found_since=first)
        log.warning(
            "RDAP 404 not yet confirmed: domain=%s first_404_age=%.0fs; asking DNS now and "
            "RDAP again in %.0fs",
            before.name,
            now - first,
            self.config.rdap.hold_interval,
        )
        self.request(before.name, "dns")
        if prev is not None and prev.registered is not None:
            return replace(prev, not_found_since=first)  # the last confirmed facts stand
        return RdapResult(None, result.server, None, not_found_since=first)

    def _dns_fresh(self, status: DomainStatus) -> bool:
        last = status.check("dns").last_success
        return last is not None and self._clock() - last <= 2 * self.config.dns.interval

    def _request_rdap_reread(self, domain: str, trigger: str) -> None:
        """The fast path to a page: something DNS saw means the registration may have changed.
        At most one such re-read per rdap.hold_interval per domain, so a registry still gets
        about 24h / rdap.interval reads per domain per day plus rare confirmations."""
        mono = self._mono()
        last = self._rdap_refresh_requested.get(domain)
        if last is not None and mono - last < self.config.rdap.hold_interval:
            log.debug("detection path paced: domain=%s trigger=%s", domain, trigger)
            return
        self._rdap_refresh_requested[domain] = mono
        log.info("detection path: domain=%s trigger=%s -> rdap re-read", domain, trigger)
        self.request(domain, "rdap")

    # --- DNS -----------------------------------------------------------------------------------

    async def _check_dns(self, domain: str) -> None:
        if self.store.get(domain) is None or domain not in self._domains:
            return
        async with self._limiter:
            delegation = await nameservers.check_delegation(
                domain, self.config.dns, on_query=self.metrics.record_dns
            )
        status = self.store.get(domain)
        if status is None:
            return
        if delegation.error is not None:
            log.warning(
                "DNS check failed: domain=%s parent_zone=%s reason=%s",
                domain,
                delegation.parent_zone,
                delegation.error,
            )
        if delegation.parent is None or delegation.delegated is None:
            # Nothing measured: the last good values stay, check_success 0 says they are stale.
            self._record(domain, "dns", ok=False, error=delegation.error, changes={})
            return
        prev = status.dns
        now = self._clock()
        child = delegation.child
        inconsistent = verdicts.nameserver_inconsistent(delegation.parent, child)
        if child is None and prev is not None and prev.parent == delegation.parent:
            # The children did not answer this time: keep their last good view.
            child, inconsistent = prev.child, prev.inconsistent
        # Only servers the parent delegates to can be lame; others were not asked.
        delegated_to = set(delegation.parent)
        lame = {ns: r for ns, r in delegation.lame.items() if ns in delegated_to}
        for ns, reason in sorted(lame.items()):
            if reason is not None:
                log.warning(
                    "lame nameserver: domain=%s nameserver=%s reason=%s", domain, ns, reason
                )
        result = DnsResult(
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
        ok = delegation.error is None
        self._record(domain, "dns", ok=ok, error=delegation.error, changes={"dns": result})
        self._apply_nameserver_verdict(domain, reread=True)
        self._after_dns_change(domain, prev, result)

    def _after_dns_change(self, domain: str, prev: DnsResult | None, now: DnsResult) -> None:
        """Turn what DNS saw into an RDAP re-read (the hold / deletion / NS-swap fast path) and
        confirm a pending 404 with an authoritative NXDOMAIN."""
        status = self.store.get(domain)
        if status is None:
            return
        rdap = status.rdap
        # A pending 404 plus an authoritative NXDOMAIN at the parent: the deletion is confirmed.
        confirm = (
            now.delegated is False
            and rdap is not None
            and rdap.not_found_since is not None
            and rdap.registered is not False
        )
        trigger: str | None = None
        if now.delegated is False:
            if prev is not None and prev.delegated is True:
                trigger = "delegation_gone"
            elif rdap is not None and rdap.registered is not False and not confirm:
                reg = rdap.registration
                if reg is None or not (reg.on_hold or reg.dying):
                    # RDAP still says alive and well: its data predates the change.
                    trigger = "parent_nxdomain"
        elif prev is not None and prev.parent and now.parent and set(prev.parent) != set(
            now.parent
        ):
            trigger = "parent_changed"
        elif now.delegated is True and prev is not None and prev.delegated is False:
            trigger = "delegation_back"
        if trigger:
            self._request_rdap_reread(domain, trigger)
        if confirm and rdap is not None:
            log.warning(
                "domain not registered (confirmed by parent NXDOMAIN): domain=%s", domain
            )
            self.store.update(
                domain,
                lambda s: replace(
                    s,
                    rdap=RdapResult(
                        False,
                        rdap.server,
                        None,
                        read_at=self._clock(),
                        not_found_since=rdap.not_found_since,
                    ),
                ),
            )
            self._prune_contacts(domain)

    def _apply_nameserver_verdict(self, domain: str, *, reread: bool) -> None:
        """Recompute domain_nameserver_mismatch from the latest parent, expected and registry
        sets (after a DNS result, an RDAP result, or a config change)."""
        status = self.store.get(domain)
        cfg = self._domains.get(domain)
        if status is None or cfg is None or status.dns is None:
            return
        dns = status.dns
        rdap = status.rdap
        registry = rdap.registration.nameservers if rdap and rdap.registration else None
        verdict = verdicts.nameserver_verdict(
            parent=dns.parent,
            delegated=dns.delegated,
            expected=cfg.nameservers,
            registry=registry,
            registry_read_at=rdap.read_at if rdap else None,
            previous=dns.mismatch,
            disagree_since=dns.disagree_since,
            now=self._clock(),
        )
        if (verdict.mismatch, verdict.disagree_since) != (dns.mismatch, dns.disagree_since):
            if verdict.mismatch and not dns.mismatch:
                log.warning(
                    "nameserver mismatch: domain=%s parent=%s expected=%s registry=%s",
                    domain,
                    ",".join(dns.parent or ()),
                    ",".join(cfg.nameservers) or "-",
                    ",".join(registry or ()) or "-",
                )
            self.store.update(
                domain,
                lambda s: replace(
                    s,
                    dns=replace(
                        s.dns, mismatch=verdict.mismatch, disagree_since=verdict.disagree_since
                    )
                    if s.dns
                    else None,
                ),
            )
        if reread and verdict.needs_registry_reread:
            self._request_rdap_reread(domain, "registry_disagrees")

    # --- e-mail --------------------------------------------------------------------------------

    async def _check_email(self, domain: str) -> None:
        status = self.store.get(domain)
        cfg = self._domains.get(domain)
        if status is None or cfg is None:
            return
        contacts: list[tuple[str, str, str]] = [(c.role, "config", c.email) for c in cfg.contacts]
        if status.rdap and status.rdap.registration:
            contacts += [
                (c.role, "rdap", c.email)
                for c in status.rdap.registration.contacts
                if c.kind == "real" and c.email
            ]
        # Verdicts on RDAP addresses restored from the state file, which keeps no addresses:
        # carry them over until the next RDAP read brings the addresses back.
        reg = status.rdap.registration if status.rdap else None
        restored = reg is not None and any(c.kind == "real" and not c.email for c in reg.contacts)
        carried = (
            tuple(v for v in (status.email.verdicts if status.email else ()) if v.source == "rdap")
            if restored
            else ()
        )
        if not contacts and not carried:
            if status.email is not None and status.email.verdicts:
                # Every contact left the record: their series go at once.
                self.store.update(domain, lambda s: replace(s, email=EmailResult(())))
            return  # nothing to judge: no series, no check state
        previous = {
            (v.role, v.source, v.mail_domain): v
            for v in (status.email.verdicts if status.email else ())
        }
        verdicts: list[ContactVerdict] = []
        failure: str | None = None
        for role, source, address in contacts:
            verdict = await self._judge_contact(domain, role, source, address)
            if verdict.reason == "invalid_address":
                # Not an address at all (RDAP placeholder text): nothing to judge, and no
                # DNS failure either, so it neither fails the check nor yields a verdict.
                log.debug("contact is not an address: domain=%s role=%s", domain, role)
                continue
            if verdict.deliverable is None:
                failure = failure or _email_reason(verdict.reason)
                old = previous.get((role, source, verdict.mail_domain))
                if old is not None and old.deliverable is not None:
                    verdict = old  # keep the last good value; success=0 says it is stale
            verdicts.append(verdict)
        result = EmailResult(tuple(verdicts) + carried)
        if failure:
            log.warning("e-mail check incomplete: domain=%s reason=%s", domain, failure)
        self._record(domain, "email", ok=failure is None, error=failure, changes={"email": result})

    async def _judge_contact(
        self, domain: str, role: str, source: str, address: str
    ) -> ContactVerdict:
        mail_domain = mail.mail_domain_of(address)
        if mail_domain is None:
            return ContactVerdict(role, source, "", None, "invalid_address", False)
        self_hosted = mail_domain == domain or mail_domain.endswith("." + domain)
        verdict = await self._mail_verdict(mail_domain)
        deliverable, reason = verdict.deliverable, verdict.reason
        if deliverable is not False and verdict.zone:
            problem = await self._mail_registration_problem(verdict.zone)
            if problem:
                deliverable, reason = False, problem
        if deliverable is True and self.config.email.smtp_probe and verdict.mx_hosts:
            accepted = await self._smtp_verdict(address, verdict.mx_hosts)
            deliverable, reason = mail.apply_probe(deliverable, reason, accepted)
        log.debug(
            "contact judged: domain=%s role=%s mail_domain=%s deliverable=%s reason=%s",
            domain,
            role,
            mail_domain,
            deliverable,
            reason,
        )
        return ContactVerdict(role, source, mail_domain, deliverable, reason, self_hosted)

    async def _mail_verdict(self, mail_domain: str) -> mail.MailVerdict:
        now = self._clock()
        cached = self._mail_verdicts.get(mail_domain)
        if cached and cached[0] > now:
            return cached[1]
        async with self._limiter:
            verdict = await mail.check_mail_domain(
                mail_domain, self.config.dns, self.config.email, on_query=self.metrics.record_dns
            )
        if verdict.deliverable is not None:
            # Many monitored domains share a mail provider: judge it once per half interval.
            self._mail_verdicts[mail_domain] = (now + self.config.email.interval / 2, verdict)
        return verdict

    async def _mail_registration_problem(self, zone: str) -> str | None:
        """Is the mail domain's own registration dead or dying? Unknown is not a problem."""
        now = self._clock()
        monitored = self.store.get(zone)
        if monitored is not None and monitored.rdap is not None:
            return _registration_problem(monitored.rdap, now)
        cached = self._mail_registrations.get(zone)
        if cached and cached.expires > now:
            return cached.problem
        result = await self.rdap.lookup(zone, follow_registrar=False)
        if not result.success:
            log.debug("mail domain registration unknown: zone=%s reason=%s", zone, result.error)
            return None
        problem = _registration_problem(_rdap_result(result), now)
        ttl = min(MAIL_REGISTRATION_TTL, self.config.rdap.interval)
        self._mail_registrations[zone] = _MailRegistration(now + ttl, problem)
        return problem

    async def _smtp_verdict(self, address: str, mx_hosts: tuple[str, ...]) -> bool | None:
        now = self._clock()
        key = address.lower()
        cached = self._smtp_results.get(key)
        if cached and cached[0] > now:
            return cached[1]
        async with self._limiter:
            probe = await mail.probe_mailbox(
                address,
                mx_hosts,
                self.config.dns,
                self.config.email,
                pacer=self._smtp_pacer,
                on_query=self.metrics.record_dns,
            )
        outcome = {True: "accepted", False: "rejected", None: "unknown"}[probe.accepted]
        self.metrics.record_smtp(outcome)
        # Probing is intrusive: at most once per smtp_interval per address, whatever the
        # answer (re-probing after an "unknown" is what greylisting and blocklists punish).
        self._smtp_results[key] = (now + self.config.email.smtp_interval, probe.accepted)
        return probe.accepted

    def _prune_contacts(self, domain: str) -> None:
        """Drop verdicts of contacts no longer on record (an RDAP contact that became redacted
        or was removed, a config contact removed by a reload): a verdict is about a mailbox,
        and without the mailbox there is nothing to report."""
        status = self.store.get(domain)
        cfg = self._domains.get(domain)
        if status is None or cfg is None or status.email is None:
            return
        on_record = {(c.role, "config", mail.mail_domain_of(c.email) or "") for c in cfg.contacts}
        rdap_roles_unread: set[str] = set()
        reg = status.rdap.registration if status.rdap else None
        for c in reg.contacts if reg else ():
            if c.kind != "real":
                continue
            if c.email:
                on_record.add((c.role, "rdap", mail.mail_domain_of(c.email) or ""))
            else:
                rdap_roles_unread.add(c.role)  # restored from the state file: no address kept
        kept = tuple(
            v
            for v in status.email.verdicts
            if (v.role, v.source, v.mail_domain) in on_record
            or (v.source == "rdap" and v.role in rdap_roles_unread)
        )
        if len(kept) != len(status.email.verdicts):
            log.info(
                "contact no longer on record, verdict dropped: domain=%s dropped=%d",
                domain,
                len(status.email.verdicts) - len(kept),
            )
            self.store.update(domain, lambda s: replace(s, email=EmailResult(kept)))

    # --- background chores --------------------------------------------------------------------

    async def _bootstrap_refresher(self) -> None:
        while True:
            await asyncio.sleep(86400.0)
            ok = await self.rdap.load_bootstrap()
            if ok and self.rdap.bootstrap.publication:
                self.metrics.bootstrap_publication.set(self.rdap.bootstrap.publication.timestamp())
            if not ok:
                await asyncio.sleep(3600.0)

    async def _state_saver(self) -> None:
        saved = -1
        while True:
            await asyncio.sleep(STATE_SAVE_EVERY)
            if self.store.generation != saved:
                saved = self.store.generation
                self._save_state()

    def _save_state(self) -> None:
        assert self.state_file is not None
        try:
            self.store.save(self.state_file)
        except OSError as exc:
            log.warning("cannot write state file: path=%s error=%s", self.state_file, exc)


def _rdap_result(result: RdapLookup) -> RdapResult:
    return RdapResult(
        registered=bool(result.registered), server=result.server, registration=result.registration
    )


def _real_contacts(reg: Registration | None) -> set[tuple[str, str]]:
    return {(c.role, c.email) for c in reg.contacts if c.email} if reg else set()


def _watch_closely(rdap: RdapResult) -> bool:
    """Registrations re-read every rdap.hold_interval: held, dying, gone, or a pending 404."""
    if rdap.registered is not True or rdap.not_found_since is not None:
        return True
    reg = rdap.registration
    return reg is not None and (reg.on_hold or reg.dying)


def _registration_problem(rdap: RdapResult, now: float) -> str | None:
    if rdap.registered is False:
        return "mail_domain_unregistered"
    reg = rdap.registration
    if reg is None:
        return None
    if reg.on_hold or reg.dying:
        return "mail_domain_held"
    paid_until = reg.paid_until
    if paid_until is not None and paid_until < datetime.fromtimestamp(now, UTC):
        return "mail_domain_expired"
    return None


def _email_reason(reason: str) -> str:
    """Map a verdict's reason onto the small fixed set exported as a label."""
    return reason if reason in ("timeout", "servfail", "smtp_unknown") else "invalid_response"
