"""When each check of each domain runs, and how many run at once.

One asyncio loop drives everything. Due checks wait in a heap keyed by wall-clock time; when due,
a check joins a *lane*: one lane per RDAP server (so a server that paused us with 429 holds up
only its own domains), one for DNS and one for e-mail. Each lane admits a bounded number of jobs;
a global semaphore caps network operations across all lanes. Nothing here runs during a scrape:
results land in the `StatusStore`, which the collector reads.
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

from exporter import mail, nameservers
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
# How stale the registry's NS set may be before a differing parent set is blamed on it; past
# this, we re-read RDAP first (the user may just have changed nameservers at the registrar).
REGISTRY_NS_MAX_AGE_FACTOR = 2


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
    ) -> None:
        self.config = config
        self.store = store
        self.rdap = rdap
        self.metrics = metrics
        self.state_file = state_file
        self._clock = clock
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
        self._rdap_refresh_requested: dict[str, float] = {}
        self.ready = False
        self._sync_domains(config)

    # --- configuration -----------------------------------------------------------------------

    def _sync_domains(self, config: Config) -> None:
        self._domains = {d.name: d for d in config.domains}
        # Forget the schedule of removed domains, so that one added back is checked at once.
        self._scheduled = {k: v for k, v in self._scheduled.items() if k[0] in self._domains}
        self.store.sync((d.name, d.labels, d.nameservers) for d in config.domains)
        self.metrics.domains.set(len(config.domains))

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
        now = self._clock()
        for name in self._domains:
            status = self.store.get(name)
            for kind in ("rdap", "dns", "email"):
                if (name, kind) in self._scheduled:
                    continue
                state = status.check(kind) if status else CheckState()
                # A result restored from the state file counts: no re-check burst on restart.
                due = state.next_due if state.next_due is not None else now
                self._push(min(due, now + self._interval(kind)), name, kind)

    def request(self, domain: str, kind: str) -> None:
        """Run a check now (used when one check learns that another's data is stale)."""
        if domain in self._domains:
            self._push(self._clock(), domain, kind)

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
                now = self._clock()
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
            key = "rdap:" + self.rdap.server_key(domain)
            limit = self.config.rdap.max_in_flight_per_server
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
        status = self.store.get(domain)
        state = status.check(kind) if status else CheckState()
        interval = self._interval(kind)
        if kind == "rdap" and status and status.rdap and status.rdap.registration:
            reg = status.rdap.registration
            if reg.on_hold or reg.dying:
                # Re-read often while a hold or dying status is present, so the page clears
                # soon after the registrar lifts it.
                interval = min(interval, self.config.rdap.hold_interval)
        if state.success is False:
            interval = min(interval, RETRY_FIRST * 2 ** max(0, state.failures - 1))
        due = self._clock() + _jittered(interval)
        self.store.update(
            domain,
            lambda s: replace(s, checks={**s.checks, kind: replace(s.check(kind), next_due=due)}),
        )
        return due

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
        self._record(domain, "rdap", ok=True, error=None, changes={"rdap": _rdap_result(result)})
        if _real_contacts(result.registration) != _real_contacts(
            before.rdap.registration if before and before.rdap else None
        ):
            # New or changed published mailboxes: judge them now, not an e-mail interval later.
            self.request(domain, "email")

    # --- DNS -----------------------------------------------------------------------------------

    async def _check_dns(self, domain: str) -> None:
        status = self.store.get(domain)
        cfg = self._domains.get(domain)
        if status is None or cfg is None:
            return
        expected = set(cfg.nameservers)
        registry_ns = _registry_nameservers(status)
        async with self._limiter:
            delegation = await nameservers.check_delegation(
                domain,
                self.config.dns,
                extra_names=expected | set(registry_ns or ()),
                on_query=self.metrics.record_dns,
            )
        if delegation.error is not None:
            log.warning(
                "DNS check failed: domain=%s parent_zone=%s reason=%s",
                domain,
                delegation.parent_zone,
                delegation.error,
            )
            self._record(domain, "dns", ok=False, error=delegation.error, changes={})
            return
        if (
            registry_ns is not None
            and delegation.parent is not None
            and set(registry_ns) != set(delegation.parent)
            and self._registry_is_stale(status)
        ):
            # The registry set may simply predate a legitimate change: re-read RDAP before
            # blaming it, and leave it out of this comparison.
            registry_ns = None
        mismatch = nameservers.nameserver_mismatch(
            delegation.parent, tuple(expected), registry_ns, delegation.child
        )
        # Expected/registry names are probed too (to fill the child view), but "lame" is a
        # property of servers the parent actually delegates to.
        delegated = set(delegation.parent or ())
        lame = {ns: r for ns, r in delegation.lame.items() if ns in delegated}
        for ns, reason in sorted(lame.items()):
            if reason is not None:
                log.warning(
                    "lame nameserver: domain=%s nameserver=%s reason=%s", domain, ns, reason
                )
        result = DnsResult(
            parent_zone=delegation.parent_zone,
            parent=delegation.parent,
            child=delegation.child,
            delegated=delegation.delegated,
            lame=lame,
            mismatch=mismatch,
        )
        self._record(domain, "dns", ok=True, error=None, changes={"dns": result})

    def _registry_is_stale(self, status: DomainStatus) -> bool:
        last = status.check("rdap").last_success
        max_age = REGISTRY_NS_MAX_AGE_FACTOR * self.config.dns.interval
        if last is not None and self._clock() - last <= max_age:
            return False
        requested = self._rdap_refresh_requested.get(status.name, 0.0)
        if self._clock() - requested > self.config.rdap.hold_interval:
            self._rdap_refresh_requested[status.name] = self._clock()
            self.request(status.name, "rdap")
        return True

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
        if probe.accepted is not None:
            # Probing is intrusive: at most once per smtp_interval per address.
            self._smtp_results[key] = (now + self.config.email.smtp_interval, probe.accepted)
        return probe.accepted

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


def _registry_nameservers(status: DomainStatus) -> tuple[str, ...] | None:
    if status.rdap is None or status.rdap.registration is None:
        return None
    return status.rdap.registration.nameservers


def _registration_problem(rdap: RdapResult, now: float) -> str | None:
    if not rdap.registered:
        return "mail_domain_unregistered"
    reg = rdap.registration
    if reg is None:
        return None
    if reg.on_hold or reg.dying:
        return "mail_domain_held"
    if reg.expiry is not None and reg.expiry < datetime.fromtimestamp(now, UTC):
        return "mail_domain_expired"
    return None


def _email_reason(reason: str) -> str:
    """Map a verdict's reason onto the small fixed set exported as a label."""
    return reason if reason in ("timeout", "servfail", "smtp_unknown") else "invalid_response"
