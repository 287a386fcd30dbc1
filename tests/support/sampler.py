"""A background scraper that keeps every /metrics exposition of a running exporter.

Properties such as "never 0", "never flaps" or "absent until confirmed" are about every moment,
not about the one scrape a test happens to take when it gets to run. The sampler scrapes from
before the exporter is ready until it is stopped, so a test that runs late in a module can
still ask what the exporter said during its first seconds:

    history = ScrapeHistory(exporter, interval=0.2).start()   # may be started before exporter
    ...
    history.values("domain_registered", domain="x.test")     # [(taken, value or None), ...]
    history.first(lambda s: s.value("domain_registered", domain="x.test") == 0)
    history.stop()

Scrapes that fail (exporter not up yet, or gone) are counted in `failures`, not raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tests.support.exporter_proc import ExporterProcess, Scrape


class ScrapeHistory:
    def __init__(self, exporter: ExporterProcess, interval: float = 0.2) -> None:
        self.exporter = exporter
        self.interval = interval
        self.failures = 0
        self._scrapes: list[Scrape] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scrape-history", daemon=True)

    def start(self) -> ScrapeHistory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.exporter.port and self.exporter.proc is not None:
                try:
                    scrape = self.exporter.scrape()
                except (AssertionError, OSError, ValueError):
                    self.failures += 1
                else:
                    # The text is only for assertion messages; drop it to keep memory small.
                    with self._lock:
                        self._scrapes.append(replace(scrape, text=""))
            self._stop.wait(self.interval)

    @property
    def scrapes(self) -> list[Scrape]:
        with self._lock:
            return list(self._scrapes)

    def values(self, name: str, **labels: str) -> list[tuple[float, float | None]]:
        """(time taken, value or None when absent) of one series in every scrape so far."""
        return [(s.taken, s.value(name, **labels)) for s in self.scrapes]

    def first(self, predicate: Callable[[Scrape], Any]) -> Scrape | None:
        """The earliest scrape for which `predicate` holds."""
        return next((s for s in self.scrapes if predicate(s)), None)

    def since(self, taken: float) -> list[Scrape]:
        return [s for s in self.scrapes if s.taken >= taken]
