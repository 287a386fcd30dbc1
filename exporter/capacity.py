"""Capacity you can see: how long one RDAP cycle takes per server, and what waits to run.

An RDAP server is asked at most `rdap.requests_per_second` (its pacer), so reading every domain
it serves once takes `domains / requests_per_second` seconds. When that exceeds `rdap.interval`
the interval is a wish, not a schedule: each domain is re-read less often than configured, and
nothing else says so. `RdapCycles` keeps the counts that this needs up to date as the config and
the results change (O(1) per RDAP result, O(domains) per reload), so a scrape only divides.

`CapacityCollector` serves those numbers and the scheduler's backlog on /metrics; every value
is computed at scrape time from counters, never by walking the domains.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.shard import Shard

log = logging.getLogger(__name__)


class RdapCycles:
    """Per RDAP server (host[:port], the pacer's key and the `server` label of
    domainwatch_rdap_requests_total): how many requests one cycle of this replica's domains
    costs it, and so how long that cycle takes at the configured pace."""

    def __init__(
        self, requests_per_second: float, interval: float, follow_registrar: bool = True
    ) -> None:
        self._rps = requests_per_second
        self._interval = interval
        self._follow_registrar = follow_registrar
        self._registry: dict[str, int] = {}  # server -> domains whose registry lane it is
        self._registrar_of: dict[str, str] = {}  # domain -> registrar server of its referral
        self._registrar: dict[str, int] = {}  # server -> domains referred to it
        self._over: set[str] = set()  # servers whose cycle exceeds the interval, as last logged

    # --- what changes the counts (all on the event loop) --------------------------------

    def configure(self, requests_per_second: float, interval: float, follow: bool) -> None:
        self._rps, self._interval, self._follow_registrar = requests_per_second, interval, follow

    def set_domains(self, servers: Iterable[str]) -> None:
        """The registry server of every domain of this replica ('' when it has none)."""
        counts = Counter(servers)  # counted in C: ~4 ms for 100,000 domains
        counts.pop("", None)
        self._registry = dict(counts)

    def forget(self, domains: set[str]) -> None:
        """Drop the referrals of domains no longer watched."""
        for domain in [d for d in self._registrar_of if d not in domains]:
            self._move_registrar(domain, None)

    def set_registrar(self, domain: str, link: str | None) -> None:
        """The registrar RDAP link of the domain's latest registration (None: no referral)."""
        server = _netloc(link) if link else None
        old = self._registrar_of.get(domain)
        if old != server:
            self._move_registrar(domain, server)
            self._log_changes([s for s in (old, server) if s])

    def _move_registrar(self, domain: str, server: str | None) -> None:
        old = self._registrar_of.pop(domain, None)
        if old is not None:
            left = self._registrar[old] - 1
            if left:
                self._registrar[old] = left
            else:
                del self._registrar[old]
        if server is not None:
            self._registrar_of[domain] = server
            self._registrar[server] = self._registrar.get(server, 0) + 1

    # --- what is read (scrape thread and event loop) ------------------------------------

    def requests(self) -> dict[str, int]:
        """server -> requests one cycle makes to it (registry reads plus registrar referrals)."""
        # dict() copies are single C calls under the GIL: safe against the loop's updates.
        out = dict(self._registry)
        if self._follow_registrar:
            for server, n in dict(self._registrar).items():
                out[server] = out.get(server, 0) + n
        return out

    def seconds(self) -> dict[str, float]:
        """server -> seconds one full cycle takes at rdap.requests_per_second."""
        return {server: n / self._rps for server, n in self.requests().items()}

    @property
    def interval(self) -> float:
        return self._interval

    def log_changes(self) -> None:
        """Log each server whose cycle crossed rdap.interval since the last call (once per
        crossing, never per scrape): warning when it became too long, info when it fits."""
        self._log_changes(None)

    def _log_changes(self, only: Iterable[str] | None) -> None:
        requests = self.requests()
        servers = set(requests) | self._over if only is None else set(only)
        for server in sorted(servers):
            n = requests.get(server, 0)
            cycle = n / self._rps
            if cycle > self._interval and server not in self._over:
                self._over.add(server)
                log.warning(
                    "RDAP cycle longer than rdap.interval: server=%s requests_per_cycle=%d "
                    "requests_per_second=%g cycle=%.1fs interval=%.0fs; each domain is re-read "
                    "only every %.1fs (shard across replicas with their own egress IPs, or "
                    "raise rdap.interval)",
                    server,
                    n,
                    self._rps,
                    cycle,
                    self._interval,
                    cycle,
                )
            elif cycle <= self._interval and server in self._over:
                self._over.discard(server)
                log.info(
                    "RDAP cycle within rdap.interval again: server=%s requests_per_cycle=%d "
                    "cycle=%.1fs interval=%.0fs",
                    server,
                    n,
                    cycle,
                    self._interval,
                )


def _netloc(url: str) -> str | None:
    # The same key as the RDAP client's pacer: the URL's netloc as written.
    try:
        return urlsplit(url).netloc or None
    except ValueError:
        return None


class CapacityCollector(Collector):
    """domainwatch_check_backlog, domainwatch_rdap_cycle_seconds, domainwatch_rdap_interval_seconds,
    domainwatch_shard_info and domainwatch_config_domains, read at scrape time in
    O(checks + RDAP servers)."""

    def __init__(
        self,
        *,
        backlog: Callable[[], Mapping[str, int]],
        cycles: RdapCycles,
        config_domains: Callable[[], int],
        shard: Shard | None,
    ) -> None:
        self._backlog = backlog
        self._cycles = cycles
        self._config_domains = config_domains
        self._shard = shard or Shard(0, 1)

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "domainwatch_check_backlog",
            "Checks that are due but not started yet (waiting in their lane's queue), by check.",
            labels=["check"],
        )
        for check, n in sorted(self._backlog().items()):
            backlog.add_metric([check], n)
        yield backlog
        cycle = GaugeMetricFamily(
            "domainwatch_rdap_cycle_seconds",
            "Seconds one full cycle of this replica's domains takes at an RDAP server at "
            "rdap.requests_per_second (registry reads plus registrar referrals).",
            labels=["server"],
        )
        for server, seconds in sorted(self._cycles.seconds().items()):
            cycle.add_metric([server], seconds)
        yield cycle
        yield GaugeMetricFamily(
            "domainwatch_rdap_interval_seconds",
            "The configured rdap.interval: how often each domain's registration should be read.",
            value=self._cycles.interval,
        )
        info = GaugeMetricFamily(
            "domainwatch_shard_info",
            "This replica's shard of the configured domains (index 0 of 1 when not sharded).",
            labels=["index", "count"],
        )
        info.add_metric([str(self._shard.index), str(self._shard.count)], 1)
        yield info
        yield GaugeMetricFamily(
            "domainwatch_config_domains",
            "Domains in the configuration, all shards together (domainwatch_domains counts "
            "this replica's shard).",
            value=self._config_domains(),
        )
