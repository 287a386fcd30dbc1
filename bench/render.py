"""Benchmark: how long one /metrics render takes with N fully-populated domains.

    python bench/render.py [--domains 10000] [--rounds 5]

Builds a StatusStore with RDAP, DNS and e-mail results for every domain (the worst case for the
collector), registers the same collectors the daemon uses, and times generate_latest().
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import DomainCollector
from exporter.registration import ContactEmail, Registration
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


def populated_store(n: int) -> StatusStore:
    store = StatusStore()
    names = [f"domain-{i:05d}.example" for i in range(n)]
    store.sync((name, {"team": f"team{i % 10}"}, ("ns1.dns.example", "ns2.dns.example"))
               for i, name in enumerate(names))
    now = time.time()
    ns = ("ns1.dns.example", "ns2.dns.example")
    for i, name in enumerate(names):
        reg = Registration(
            name=name,
            expiry=datetime.now(UTC) + timedelta(days=30 + i % 300),
            statuses=("client delete prohibited", "client transfer prohibited",
                      "client update prohibited"),
            nameservers=ns,
            registrar="Example Registrar, Inc.",
            registrar_iana_id="9999",
            contacts=(ContactEmail("registrant", "redacted"),),
        )
        ok = CheckState(success=True, last_attempt=now, last_success=now)
        status = DomainStatus(
            name=name,
            labels={"team": f"team{i % 10}"},
            expected_nameservers=ns,
            rdap=RdapResult(registered=True, server="https://rdap.example/", registration=reg),
            dns=DnsResult(parent_zone="example", parent=ns, child=ns, delegated=True,
                          lame={n_: None for n_ in ns}, mismatch=False),
            email=EmailResult((
                ContactVerdict("registrant", "config", "mail.example", True, "mx_ok", False),
                ContactVerdict("technical", "config", "mail.example", True, "mx_ok", False),
            )),
            checks={"rdap": ok, "dns": ok, "email": ok},
        )
        store.update(name, lambda _old, s=status: s)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    store = populated_store(args.domains)
    registry = CollectorRegistry()
    ExporterMetrics(registry)
    collector = DomainCollector(store, clock=lambda: 1_800_000_000.0)

    def scrape() -> bytes:
        # Exactly what web.py serves for GET /metrics.
        return generate_latest(registry) + collector.exposition()

    start = time.perf_counter()
    body = scrape()
    cold = time.perf_counter() - start
    times = []
    for i in range(args.rounds):
        # Touch 1 % of the domains between scrapes, as finished checks would.
        for status in store.snapshot()[i :: 100]:
            store.update(status.name, lambda s: replace(s))
        start = time.perf_counter()
        body = scrape()
        times.append(time.perf_counter() - start)
    samples = body.count(b"\n") - body.count(b"# ")
    print(f"domains={args.domains} samples={samples} bytes={len(body)} "
          f"first_scrape_seconds={cold:.3f} "
          f"scrape_seconds median={statistics.median(times):.3f} max={max(times):.3f}")

    slow = CollectorRegistry()
    slow.register(DomainCollector(store, clock=lambda: 1_800_000_000.0))
    start = time.perf_counter()
    reference = generate_latest(slow)
    print(f"prometheus_client generate_latest over collect(): {time.perf_counter() - start:.3f}s; "
          f"identical to the fast path: {reference == collector.exposition()}")


if __name__ == "__main__":
    main()
