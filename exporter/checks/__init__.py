"""One shape for every check: what the scheduler runs, and how a result lands in the store.

A check is a module in this package with one `Check` subclass. The scheduler knows nothing of a
check's internals; it asks each check for

- `name`: the `check` label value (`rdap`, `dns`, `email`, ...) and its key in the store,
- `lane(domain)`: which queue the run waits in (one per RDAP server, one for DNS, ...),
- `next_interval(status)`: how long until the next run after a success,
- `run(domain) -> Result`: measure (never raises for network trouble), and
- `observe(domain, kind, before, after)`: react when any check's result (or the config) changed,
  e.g. DNS seeing a delegation vanish asks for an RDAP re-read.

`Result.land` is a pure `DomainStatus -> DomainStatus` function applied under the store's lock
together with the check's bookkeeping (success, timestamps), so a scrape never sees one without
the other. In the spirit of blackbox_exporter's uniform prober signature.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from exporter.config import Config, DomainConfig
from exporter.selfmetrics import ExporterMetrics
from exporter.store import DomainStatus, StatusStore

JITTER = 0.1  # each interval is stretched or shrunk by up to 10 % so checks spread out

Land = Callable[[DomainStatus], DomainStatus]


def jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass(frozen=True)
class Result:
    """What one run measured. `land` is None when nothing was measured: the last good values
    stay and `domain_check_success 0` says they are stale."""

    ok: bool
    error: str | None = None  # one of the check's fixed reasons when not ok
    land: Land | None = None
    record: bool = True  # False: nothing to check for this domain (no series, no bookkeeping)


class Context(Protocol):
    """What a check may ask of the scheduler that runs it."""

    config: Config
    store: StatusStore
    metrics: ExporterMetrics
    limiter: asyncio.Semaphore  # the global cap on network operations

    def now(self) -> float:
        """Unix time, for what is exported and persisted."""

    def domain(self, name: str) -> DomainConfig | None:
        """The configured domain, None when a reload removed it."""

    def request(self, domain: str, kind: str) -> None:
        """Run that check of that domain as soon as its lane allows."""

    def refresh(self, domain: str, kind: str, trigger: str) -> None:
        """Like `request`, but paced: at most once per `rdap.hold_interval` per domain and
        check, and logged as a detection path (what we saw -> what we re-read)."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background chore for as long as the scheduler runs."""


class Check:
    """Base class of every check; subclasses set `name` and implement interval() and run()."""

    name: ClassVar[str]
    # Checks whose results this one reads: `check` runs those first (RDAP before DNS/e-mail).
    after: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def interval(self) -> float:
        """The configured interval (a failure retries sooner, with back-off, up to this)."""
        raise NotImplementedError

    def next_interval(self, status: DomainStatus | None) -> float:
        """Seconds until the next run after this one (jitter included)."""
        return jittered(self.interval())

    def lane(self, domain: str) -> tuple[str, int]:
        """(lane key, how many runs of that lane may be in flight)."""
        return self.name, self.ctx.config.concurrency

    async def run(self, domain: str) -> Result:
        """Measure one domain. Expected network failures are a Result, never an exception."""
        raise NotImplementedError

    def observe(
        self, domain: str, kind: str, before: DomainStatus | None, after: DomainStatus
    ) -> None:
        """A result of check `kind` landed for `domain` (`kind == "config"` after a reload)."""

    async def start(self) -> None:
        """Before the first run (e.g. load the RDAP bootstrap)."""

    async def reconfigure(self, config: Config) -> None:
        """A validated new config was swapped in."""

    def forget(self, domains: set[str]) -> None:
        """Drop per-domain caches of domains that are no longer configured."""
