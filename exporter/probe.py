"""`/probe?target=NAME`: caarlos0/domain_exporter's interface on top of the background checks.

domain_exporter (archived 2026-08-29) looked a domain up during the scrape; its users scrape
`/probe` with the blackbox-style `__param_target` relabelling. Here a probe never does network
I/O itself:

- A domain the config lists answers from its cached results: the same per-domain families as
  /metrics, for that domain only, plus the probe gauges below.
- An unlisted one is refused (403) unless `probe.allow_unlisted` is set. Then it joins the
  background schedule (its first checks due at once, paced and bounded like every other check),
  stays there while it keeps being probed and is dropped `probe.idle_timeout` after its last
  probe. At most `probe.max_unlisted` are watched at once; a new one beyond that is 429.
  Probe-only domains never appear on /metrics or the status page.
- A probe of a domain without an RDAP result yet waits for the first one, at most
  min(X-Prometheus-Scrape-Timeout-Seconds - 0.5 s, `probe.max_wait`), then answers what is
  known: `domain_probe_success 0` and `domain_probe_pending 1` when that is nothing yet.
  At most WAITERS probes wait at once (each holds a web worker); the rest answer at once.
"""

from __future__ import annotations

import asyncio
import enum
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collector import DomainCollector
from exporter.config import Config, DomainConfig, is_ip_literal
from exporter.names import InvalidName, to_alabel
from exporter.store import DomainStatus, StatusStore

WAITERS = 2  # probes that may wait for a first result at once; each holds a web worker
POLL = 0.05  # how often a waiting probe looks at the store
SCRAPE_MARGIN = 0.5  # seconds left for rendering and the network within the scrape timeout
_MAX_TARGET = 1000  # characters; a DNS name is at most 253

StartResponse = Callable[..., Any]
OUTCOMES = ("listed", "unlisted", "not_allowed", "over_limit", "other_shard", "invalid")


class ProbeRefused(Exception):
    """A probe answered with an HTTP error; `status` is the status line, the message the body."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def probe_name(raw: str) -> str:
    """The A-label a target names, or ProbeRefused (400): IP literals, URLs, bare TLDs and
    anything that is not a DNS name are refused, as in the config file."""
    text = raw.strip()
    shown = repr(text[:80] + ("..." if len(text) > 80 else ""))
    if not text:
        raise ProbeRefused("400 Bad Request", "target parameter is missing")
    if len(text) > _MAX_TARGET:
        raise ProbeRefused("400 Bad Request", f"target {shown} is not a domain name")
    if is_ip_literal(text):
        raise ProbeRefused("400 Bad Request", f"target {shown} is an IP address, not a domain")
    try:
        name = to_alabel(text)
    except InvalidName:
        raise ProbeRefused("400 Bad Request", f"target {shown} is not a domain name") from None
    if "." not in name:
        raise ProbeRefused("400 Bad Request", f"target {shown} is a top-level domain")
    return name


class Admission(enum.Enum):
    KNOWN = "known"  # already watched: its last-probed time moved on
    NEW = "new"  # just admitted: the caller schedules it
    FULL = "full"  # max_unlisted reached


class UnlistedTargets:
    """Probe-only domains and when each was last probed (monotonic). Used from web threads
    and the event loop, hence the lock."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._mono = monotonic
        self._lock = threading.Lock()
        self._last: OrderedDict[str, float] = OrderedDict()  # least recently probed first

    def __len__(self) -> int:
        with self._lock:
            return len(self._last)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._last

    def admit(self, name: str, cap: int) -> Admission:
        with self._lock:
            if name in self._last:
                self._last[name] = self._mono()
                self._last.move_to_end(name)
                return Admission.KNOWN
            if len(self._last) >= cap:
                return Admission.FULL
            self._last[name] = self._mono()
            return Admission.NEW

    def expire(self, idle_timeout: float, cap: int, allowed: bool) -> list[str]:
        """Forget (and return) every name idle longer than idle_timeout, all of them when
        unlisted probes are no longer allowed, and the least recently probed ones beyond cap
        (a reload may lower it)."""
        now = self._mono()
        with self._lock:
            gone = [
                name
                for name, last in self._last.items()
                if not allowed or now - last > idle_timeout
            ]
            for name in gone:
                del self._last[name]
            while len(self._last) > cap:
                gone.append(self._last.popitem(last=False)[0])
            return gone


class Watcher(Protocol):
    """What the prober needs of the scheduler (its methods run on the event loop only)."""

    config: Config
    unlisted: frozenset[str]

    def add_transient(self, domain: DomainConfig) -> None: ...

    def drop_transient(self, name: str) -> None: ...


class ListedView:
    """The store as /metrics and the status page see it (store.Records): without probe-only
    domains. It holds nothing itself; every read goes through to the real store."""

    def __init__(self, store: StatusStore, hidden: Callable[[], frozenset[str]]) -> None:
        self._inner = store
        self._hidden = hidden

    def snapshot(self) -> list[DomainStatus]:
        hidden = self._hidden()
        statuses = self._inner.snapshot()
        if not hidden:  # the common case costs nothing at 100k domains
            return statuses
        return [s for s in statuses if s.name not in hidden]

    def get(self, name: str) -> DomainStatus | None:
        return None if name in self._hidden() else self._inner.get(name)

    @property
    def generation(self) -> int:
        return self._inner.generation


@dataclass(frozen=True)
class ProbeResult:
    status: DomainStatus
    listed: bool
    duration: float


class Prober:
    """The /probe endpoint (`app`) and the idle sweeper (`sweeper`, on the event loop)."""

    def __init__(
        self,
        store: StatusStore,
        watcher: Watcher,
        post: Callable[[Callable[[], None]], object],
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`post(fn)` runs fn on the event loop (loop.call_soon_threadsafe)."""
        self._store = store
        self._watcher = watcher
        self._post = post
        self._clock = clock
        self._mono = monotonic
        self._sleep = sleep
        self.targets = UnlistedTargets(monotonic)
        self._waiters = threading.BoundedSemaphore(WAITERS)
        self._listed: tuple[int, frozenset[str]] = (0, frozenset())
        self._requests = Counter(
            "domainwatch_probe_requests",
            "Requests to /probe by outcome: listed, unlisted (answered), not_allowed (unlisted "
            "while probe.allow_unlisted is false), over_limit (probe.max_unlisted reached), "
            "other_shard (listed, watched by another replica), invalid (no or bad target).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self._requests.labels(outcome=outcome)
        unlisted = Gauge(
            "domainwatch_probe_unlisted_domains",
            "Domains watched only because /probe asked for them (never on /metrics).",
            registry=registry,
        )
        unlisted.set_function(lambda: len(self.targets))

    # --- the endpoint (web threads) --------------------------------------------------------

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        targets = params.get("target", [])
        try:
            if len(targets) > 1:
                raise ProbeRefused("400 Bad Request", "give one target parameter")
            result = self.probe(
                targets[0] if targets else "",
                environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"),
            )
        except ProbeRefused as exc:
            if exc.status.startswith("400"):
                self._requests.labels(outcome="invalid").inc()
            start_response(exc.status, [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{exc}\n".encode()]
        body = render(result, self._clock)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [body]

    def probe(self, raw_target: str, scrape_timeout: str | None = None) -> ProbeResult:
        started = self._mono()
        config = self._watcher.config
        listed_names = self._listed_names(config)
        name = probe_name(raw_target)
        # domain_exporter probed "www.example.com" as "example.com"; so do we, unless the
        # config lists the www name itself.
        if name.startswith("www.") and name not in listed_names and name.count(".") >= 2:
            name = name[4:]
        listed = name in listed_names
        status = self._store.get(name)
        if listed and status is None:
            # Listed, yet not in this replica's store: another shard watches it (--shard.*).
            self._requests.labels(outcome="other_shard").inc()
            raise ProbeRefused(
                "404 Not Found",
                f"{name} is in the config but watched by another replica (--shard.count)",
            )
        if listed:
            self._requests.labels(outcome="listed").inc()
        else:
            self._admit(name, config)
            status = self._store.get(name)
        if status is None or status.check("rdap").success is None:
            budget = config.probe.max_wait
            header = _seconds(scrape_timeout)
            if header is not None:
                budget = min(budget, header - SCRAPE_MARGIN)
            status = self._wait_for_first(name, budget) or status
        return ProbeResult(
            status=status or DomainStatus(name=name),
            listed=listed,
            duration=self._mono() - started,
        )

    def _listed_names(self, config: Config) -> frozenset[str]:
        # One set per config object (a reload swaps it), not one per probe.
        key, names = self._listed
        if key != id(config):
            names = frozenset(d.name for d in config.domains)
            self._listed = (id(config), names)
        return names

    def _admit(self, name: str, config: Config) -> None:
        settings = config.probe
        if not settings.allow_unlisted:
            self._requests.labels(outcome="not_allowed").inc()
            raise ProbeRefused(
                "403 Forbidden",
                f"{name} is not in the config and probe.allow_unlisted is false: list it under "
                "domains, or allow unlisted probe targets",
            )
        admission = self.targets.admit(name, settings.max_unlisted)
        if admission is Admission.FULL:
            self._requests.labels(outcome="over_limit").inc()
            raise ProbeRefused(
                "429 Too Many Requests",
                f"{settings.max_unlisted} unlisted domains are watched already "
                f"(probe.max_unlisted); {name} is not one of them. List it under domains, raise "
                "the limit, or wait until unprobed ones are dropped (probe.idle_timeout)",
            )
        self._requests.labels(outcome="unlisted").inc()
        if admission is Admission.NEW:
            self._post(lambda: self._add_on_loop(name))

    def _wait_for_first(self, name: str, budget: float) -> DomainStatus | None:
        if not budget > 0 or not self._waiters.acquire(blocking=False):
            return None
        try:
            deadline = self._mono() + budget
            while True:
                status = self._store.get(name)
                if status is not None and status.check("rdap").success is not None:
                    return status
                left = deadline - self._mono()
                if left <= 0:
                    return status
                self._sleep(min(POLL, left))
        finally:
            self._waiters.release()

    # --- the event loop side ---------------------------------------------------------------

    def _add_on_loop(self, name: str) -> None:
        # The sweeper may have dropped the name between the probe and now (both run on the
        # loop, so this check and the sweep cannot interleave).
        if name in self.targets:
            self._watcher.add_transient(DomainConfig(name=name))

    def sweep(self) -> list[str]:
        """Drop idle (and, after a reload, no longer allowed) probe-only domains."""
        settings = self._watcher.config.probe
        gone = self.targets.expire(
            settings.idle_timeout, settings.max_unlisted, settings.allow_unlisted
        )
        for name in gone:
            self._watcher.drop_transient(name)
        return gone

    async def sweeper(self) -> None:
        while True:
            idle = self._watcher.config.probe.idle_timeout
            # Often enough that a domain goes within ~1/4 of its idle time after it expired.
            await asyncio.sleep(min(60.0, max(0.1, idle / 4)))
            self.sweep()


def _seconds(header: str | None) -> float | None:
    if not header:
        return None
    try:
        value = float(header)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


# --- rendering ---------------------------------------------------------------------------------

PROBE_FAMILIES = (
    (
        "domain_probe_success",
        "1 if the domain's last RDAP check succeeded (its registration data is current), else 0 "
        "(failed, or not checked yet: see domain_probe_pending). As in domain_exporter.",
    ),
    (
        "domain_probe_pending",
        "1 while the domain has no RDAP result yet (a probe-only domain just added), else 0.",
    ),
    (
        "domain_probe_listed",
        "1 if the config lists the domain, 0 if it is watched only because it is probed.",
    ),
    (
        "domain_probe_duration_seconds",
        "How long this probe took, waiting for a first result included (no lookup runs "
        "during a probe otherwise).",
    ),
)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def describe(self) -> list[Metric]:
        return []


def render(result: ProbeResult, clock: Callable[[], float] = time.time) -> bytes:
    """The probe gauges, then the per-domain families exactly as /metrics renders them."""
    s = result.status
    labels = {**s.labels, "domain": s.name}
    rdap = s.check("rdap").success
    values = (
        1.0 if rdap is True else 0.0,
        1.0 if rdap is None else 0.0,
        1.0 if result.listed else 0.0,
        round(result.duration, 6),
    )
    families: list[Metric] = []
    for (name, doc), value in zip(PROBE_FAMILIES, values, strict=True):
        family = GaugeMetricFamily(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), value)
        families.append(family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    one = StatusStore()
    one.sync([(s.name, s.labels, s.expected_nameservers)])
    one.update(s.name, lambda _old: s)
    return generate_latest(registry) + DomainCollector(one, clock).exposition()
