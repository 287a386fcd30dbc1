"""Benchmark: time and DNS queries of one delegation check and one mail-domain check.

    python bench/dnscheck.py [--rounds 50]

Starts the test DNS world (tests/support/dnsworld.py: Knot hierarchy + unbound on 127.53.0.0/16,
port 53, so run as root) and times `nameservers.check_delegation` and `mail.check_mail_domain`
exactly as the scheduler calls them. Only loopback addresses are contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter import mail, nameservers
from exporter.config import EmailSettings
from tests.support.dnsworld import DnsWorld


async def measure(label: str, rounds: int, call) -> None:  # type: ignore[no-untyped-def]
    times = []
    queries: Counter[str] = Counter()
    for _ in range(rounds):
        start = time.perf_counter()
        await call(queries.update)
        times.append(time.perf_counter() - start)
    per = {k: v / rounds for k, v in queries.items()}
    print(f"{label}: median={statistics.median(times) * 1000:.1f} ms "
          f"p90={sorted(times)[int(rounds * 0.9) - 1] * 1000:.1f} ms queries_per_check={per}")


async def run(world: DnsWorld, rounds: int) -> None:
    email = EmailSettings(allow_private_addresses=True)
    for mode in ("root", "resolver"):
        dns = world.settings(mode=mode, timeout=0.5)
        await measure(
            f"delegation good.test ({mode})", rounds,
            lambda rec, dns=dns: nameservers.check_delegation(
                "good.test", dns, on_query=lambda o: rec([o])),
        )
        await measure(
            f"delegation shop.co.test ({mode})", rounds,
            lambda rec, dns=dns: nameservers.check_delegation(
                "shop.co.test", dns, on_query=lambda o: rec([o])),
        )
    dns = world.settings(mode="resolver", timeout=0.5)
    await measure(
        "mail mx-ok.test (resolver)", rounds,
        lambda rec: mail.check_mail_domain("mx-ok.test", dns, email, on_query=lambda o: rec([o])),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with DnsWorld(Path(tempfile.mkdtemp(prefix="domainwatch-dnsbench-"))) as world:
        asyncio.run(run(world, args.rounds))


if __name__ == "__main__":
    main()
