"""When each check of each domain runs, and how many run at once. Nothing else.

One asyncio loop drives everything. Due checks wait in a heap keyed by the *monotonic* clock (a
wall-clock step backwards must not stall every check); when due, a check joins a *lane* that the
check names (one per RDAP registry server, so a server that paused us with 429 holds up only its
own domains; one for DNS; one for e-mail). Each lane admits a bounded number of runs; per-host
in-flight caps live in the RDAP client's pacers, and a global semaphore caps network operations
across all lanes. Nothing here runs during a scrape: results land in the `StatusStore`, which
the collector reads.

What a check measures, how its result lands and how checks react to each other live in the
modules of `exporter.checks`; the verdicts themselves are pure functions in `verdicts.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from exporter.checks import Check, Result, jittered
from exporter.checks.contacts import ContactsCheck
from exporter.checks.delegation import DelegationCheck
from exporter.checks.dnssec import DnssecCheck
from exporter.checks.nsdomains import NameserverDomainsCheck
from exporter.checks.registration import RegistrationCheck
from exporter.checks.whois import WhoisCheck
from exporter.config import Config, DomainConfig
from exporter.duequeue import DueQueue
from exporter.pacing import doubled
from exporter.rdap import RdapClient
from exporter.selfmetrics import ExporterMetrics
from exporter.shard import Shard, ShardFilter
from exporter.store import CheckState, DomainStatus, StatusStore
from exporter.whois import WhoisClient

log = logging.getLogger(__name__)

RETRY_FIRST = 30.0  # first retry after a failure; doubles up to the check's interval
STATE_SAVE_EVERY = 30.0


@dataclass
class _Lane:
    limit: int
    queue: deque[tuple[str, str]] = field(default_factory=deque)
    queued: set[tuple[str, str]] = field(default_factory=set)  # O(1) "already waiting?"
    slots: asyncio.Semaphore | None = None
    worker: asyncio.Task[None] | None = None


class Scheduler:
    """Runs the checks of `exporter.checks` for every configured domain; also the `Context`
    those checks talk to."""

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
        shard: Shard | None = None,
    ) -> None:
        self.config = config
        self.shard = shard  # None: every configured domain is this replica's
        self._shard_filter = ShardFilter(shard)
        self.store = store
        self.rdap = rdap
        self.metrics = metrics
        self.limiter = limiter
        self.state_file = state_file
        self._clock = clock  # Unix time, for what is exported and persisted
        self._mono = monotonic  # for when things run
        self._domains: dict[str, DomainConfig] = {}
        # Watched although not configured (e.g. /probe targets), until drop_transient().
        self._transient: dict[str, DomainConfig] = {}
        self.unlisted: frozenset[str] = frozenset()  # transient and not configured; any thread
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        # (domain, check) -> monotonic time of the last paced re-run another check asked for.
        self._refreshed: dict[tuple[str, str], float] = {}
        self._requested_once: set[tuple[str, str]] | None = None  # collects for check_once
        self.whois = WhoisClient(config.whois, limiter=limiter)  # registries without RDAP
        # The DNSSEC check walks to the same parents: it shares the delegation check's cuts.
        delegation = DelegationCheck(self)
        self.checks: dict[str, Check] = {
            c.name: c
            for c in (
                RegistrationCheck(self, rdap, self.whois),
                WhoisCheck(self, rdap, self.whois),
                delegation,
                ContactsCheck(self, rdap),
                DnssecCheck(self, delegation.zones),
                NameserverDomainsCheck(self, rdap, self.whois),
            )
        }
        # check -> runs waiting in a lane's queue (domainwatch_check_backlog), kept as counters
        # so that a scrape reads them in O(checks).
        self._backlog: dict[str, int] = dict.fromkeys(self.checks, 0)
        # When each (domain, check) runs next, on the monotonic clock.
        self._queue = DueQueue(tuple(self.checks), origin=monotonic())
        self.ready = False
        self._sync_domains(config)

    # --- the Context the checks see ------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def domain(self, name: str) -> DomainConfig | None:
        return self._domains.get(name)

    def request(self, domain: str, kind: str) -> None:
        """Run a check now (used when one check learns that another's data is stale)."""
        if domain not in self._domains or kind not in self.checks:
            return
        if self._requested_once is not None:
            self._requested_once.add((domain, kind))
            return
        self._push(self._mono(), domain, kind)

    def refresh(self, domain: str, kind: str, trigger: str) -> None:
        mono = self._mono()
        last = self._refreshed.get((domain, kind))
        if last is not None and mono - last < self.config.rdap.hold_interval:
            log.debug("detection path paced: domain=%s trigger=%s check=%s", domain, trigger, kind)
            return
        self._refreshed[(domain, kind)] = mono
        log.info("detection path: domain=%s trigger=%s -> %s re-read", domain, trigger, kind)
        self.request(domain, kind)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._spawn(coro)

    # --- configuration -----------------------------------------------------------------------

    def _sync_domains(self, config: Config) -> set[str]:
        """Watch the config's domains (of this shard); returns the names not watched before."""
        # With --shard.*, this replica watches only its shard; a reload re-filters the new list.
        mine = self._shard_filter.select(config.domains)
        before = self._domains
        self._domains = {d.name: d for d in mine}
        self._sync_store(gone=before.keys() - self._domains.keys())
        self.metrics.domains.set(len(mine))
        if not config.domains:
            log.warning("no domains configured: nothing is being watched")
        elif self.shard is not None:
            log.info(
                "shard %d of %d: watching %d of %d configured domains",
                self.shard.index,
                self.shard.count,
                len(mine),
                len(config.domains),
            )
        # Only a domain whose own config is new or changed can change a check's verdict: a
        # reload of 100k domains must not re-judge (and rewrite) every one of them on the loop.
        for name, domain in self._domains.items():
            if before.get(name) == domain:
                continue
            status = self.store.get(name)
            if status is not None:
                self._observe(name, "config", status)
        return self._domains.keys() - before.keys()

    def _sync_store(self, gone: Collection[str] | None = None) -> None:
        """Configured domains first, then transient ones the config does not list. `gone`:
        the names no longer watched, when the caller knows them (saves a pass over every
        schedule entry, 400k of them at 100k domains)."""
        for name, domain in self._transient.items():
            self._domains.setdefault(name, domain)
        configured = {d.name for d in self.config.domains}
        self.unlisted = frozenset(n for n in self._transient if n not in configured)
        # Forget the schedule of removed domains, so that one added back is checked at once.
        if gone is None:
            self._queue.keep_only(self._domains)
            self._refreshed = {k: v for k, v in self._refreshed.items() if k[0] in self._domains}
        else:
            for name in gone:
                if name in self._domains:  # still watched as a /probe target
                    continue
                self._queue.forget(name)
                for kind in self.checks:
                    self._refreshed.pop((name, kind), None)
        self.store.sync((d.name, d.labels, d.nameservers) for d in self._domains.values())
        for check in self.checks.values():
            check.forget(set(self._domains))

    def add_transient(self, domain: DomainConfig) -> None:
        """Watch a domain the config does not list (a /probe target) like any other, until
        drop_transient(); its first checks are due at once, paced like every other. A name the
        config lists is only remembered, so that it stays watched if a reload removes it."""
        if domain.name in self._transient:
            return
        self._transient[domain.name] = domain
        if domain.name in self._domains:
            return
        self._domains[domain.name] = domain
        self._sync_store()
        if self.ready:
            # Only this one: a run in flight has no entry until it ends (and then schedules its
            # next), so scheduling "every domain" here would start a second run of each.
            self._schedule_missing([domain.name])

    def drop_transient(self, name: str) -> None:
        """Stop watching a domain added by add_transient(); a configured one stays."""
        if self._transient.pop(name, None) is None:
            return
        if any(d.name == name for d in self.config.domains):
            return
        self._domains.pop(name, None)
        self._sync_store()

    async def apply_config(self, config: Config) -> None:
        """Swap in a validated config. Known domains keep their results and schedule; new ones
        are checked as soon as pacing allows; removed ones disappear from /metrics at once."""
        self.config = config
        for check in self.checks.values():
            await check.reconfigure(config)
        # Known domains keep their schedule: only new ones need a first one.
        self._schedule_missing(self._sync_domains(config))

    # --- the loop ------------------------------------------------------------------------------

    def _push(self, due: float, domain: str, kind: str) -> None:
        self._queue.push(due, domain, kind)  # supersedes any earlier entry
        self._wake.set()

    @property
    def _scheduled(self) -> dict[tuple[str, str], float]:
        """(domain, check) -> monotonic due time of every scheduled check. O(entries): for
        tests and debugging, never on a hot path."""
        return self._queue.items()

    def _schedule_missing(self, names: Iterable[str] | None = None) -> None:
        """Schedule every check of these domains (default: all) that has no schedule yet.

        A result restored from the state file counts: no re-check burst on restart. next_due
        is persisted as Unix time; the queue runs on the monotonic clock."""
        now, mono = self._clock(), self._mono()
        if names is not None:
            for name in names:
                if name not in self._domains:
                    continue
                status = self.store.get(name)
                for kind, check in self.checks.items():
                    if self._queue.scheduled(name, kind):
                        continue
                    state = status.check(kind) if status else CheckState()
                    delay = state.next_due - now if state.next_due is not None else 0.0
                    delay = min(max(delay, 0.0), check.interval())
                    self._push(mono + delay, name, kind)
            return
        # Every domain (start-up): the same due times as above, computed a check at a time in
        # list comprehensions and heapified at once (600,000 entries at 100k domains).
        statuses = {s.name: s for s in self.store.snapshot()}
        names = list(self._domains)
        empty: dict[str, CheckState] = {}
        unset = CheckState()
        states = [s.checks if (s := statuses.get(n)) is not None else empty for n in names]

        def columns() -> Iterator[list[float]]:
            for kind, check in self.checks.items():
                cap = check.interval()
                # mono + min(max(next_due - now, 0), cap), without two calls per entry
                yield [
                    mono
                    if t is None or t <= now
                    else mono + cap
                    if t - now > cap
                    else mono + (t - now)
                    for t in [c.get(kind, unset).next_due for c in states]
                ]

        if self._queue.fill(names, columns()):
            self._wake.set()

    async def run(self) -> None:
        for check in self.checks.values():
            await check.start()
        if self.state_file:
            self._spawn(self._state_saver())
        self._schedule_missing()
        self.ready = True
        try:
            while not self._stopping.is_set():
                now = self._mono()
                for domain, kind in self._queue.pop_due(now):
                    self._dispatch(domain, kind)
                due = self._queue.next_due()
                timeout = due - now if due is not None else None
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
        """Run every check of these domains once, now (the `check` sub-command): first the
        checks others read (RDAP), then the rest together; then once more whatever a check
        asked to re-run (e.g. an RDAP re-read confirming a nameserver disagreement)."""
        for check in self.checks.values():
            await check.start()
        self._requested_once = set()
        first = [c for c in self.checks.values() if not c.after]
        rest = [c for c in self.checks.values() if c.after]

        async def one(domain: str) -> None:
            for c in first:
                await self._run(domain, c)
            await asyncio.gather(*(self._run(domain, c) for c in rest))

        try:
            await asyncio.gather(*(one(d) for d in domains))
            again, self._requested_once = self._requested_once, None
            wanted = set(domains)
            await asyncio.gather(
                *(self._run(d, self.checks[k]) for d, k in sorted(again) if d in wanted)
            )
        finally:
            self._requested_once = None

    def backlog(self) -> dict[str, int]:
        """check -> runs due but not started. Due heap entries move to their lane's queue the
        moment they are due, so the queues hold the whole backlog; up to `concurrency` runs
        per lane more may be started and waiting for their RDAP server's pace."""
        return dict(self._backlog)  # one C call: safe to read from the scrape thread

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
        key, limit = self.checks[kind].lane(domain)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(limit=limit, slots=asyncio.Semaphore(limit))
        if (domain, kind) in lane.queued:
            return
        lane.queue.append((domain, kind))
        lane.queued.add((domain, kind))
        self._backlog[kind] = self._backlog.get(kind, 0) + 1
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
            self._backlog[kind] -= 1
            self._spawn(self._run_job(domain, kind, lane.slots))

    async def _run_job(self, domain: str, kind: str, slots: asyncio.Semaphore) -> None:
        try:
            await self._run(domain, self.checks[kind])
        finally:
            slots.release()
            if domain in self._domains and not self._queue.scheduled(domain, kind):
                self._push(self._next_due(domain, kind), domain, kind)

    async def _run(self, domain: str, check: Check) -> None:
        """One run of one check, recorded the same way for every check."""
        if domain not in self._domains or self.store.get(domain) is None:
            return
        try:
            result = await check.run(domain)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The only catch-all: a bug in one check must not stop the daemon.
            log.exception("check crashed: domain=%s check=%s", domain, check.name)
            result = Result(ok=False, error="invalid_response")
        if not result.record:
            return
        before = self.store.get(domain)
        self._record(domain, check.name, result)
        after = self.store.get(domain)
        if after is not None:
            self._observe(domain, check.name, after, before)

    def _observe(
        self, domain: str, kind: str, after: DomainStatus, before: DomainStatus | None = None
    ) -> None:
        for check in self.checks.values():
            try:
                check.observe(domain, kind, before, after)
            except Exception:
                log.exception("check reaction crashed: domain=%s check=%s", domain, check.name)

    def _next_due(self, domain: str, kind: str) -> float:
        """Monotonic time of the next run; the Unix-time equivalent is persisted."""
        status = self.store.get(domain)
        state = status.check(kind) if status else CheckState()
        interval = self.checks[kind].next_interval(status)
        if state.success is False:
            # doubled() bounds the exponent: weeks of failed five-minute checks must not
            # overflow (the check would drop out of the schedule).
            interval = min(interval, jittered(doubled(RETRY_FIRST, state.failures - 1)))
        due = self._clock() + interval
        self.store.update(
            domain,
            lambda s: replace(s, checks={**s.checks, kind: replace(s.check(kind), next_due=due)}),
        )
        return self._mono() + interval

    def _record(self, domain: str, kind: str, result: Result) -> None:
        now = self._clock()

        def change(s: DomainStatus) -> DomainStatus:
            c = s.check(kind)
            if result.ok:
                c = replace(
                    c, success=True, last_attempt=now, last_success=now, error=None, failures=0
                )
            else:
                c = replace(
                    c, success=False, last_attempt=now, error=result.error, failures=c.failures + 1
                )
            s = replace(s, checks={**s.checks, kind: c})
            return result.land(s) if result.land is not None else s

        self.store.update(domain, change)

    # --- background chores --------------------------------------------------------------------

    async def _state_saver(self) -> None:
        saved = -1
        while True:
            await asyncio.sleep(STATE_SAVE_EVERY)
            if self.store.generation != saved:
                saved = self.store.generation
                # Off the event loop: a save encodes only the domains that changed, but that
                # is seconds of CPU when most of 100k did (and the first save writes them all).
                await asyncio.to_thread(self._save_state)

    def _save_state(self) -> None:
        assert self.state_file is not None
        try:
            self.store.save(self.state_file)
        except OSError as exc:
            log.warning("cannot write state file: path=%s error=%s", self.state_file, exc)
