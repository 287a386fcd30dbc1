"""Benchmark: delegation checks per second against Knot, beside raw dnspython doing the same job.

    python bench/dnscheck.py [--domains 300] [--rounds 5] [--concurrency 16] [--before REV]

Starts a Knot hierarchy of its own on 127.93.100.0/24 and 127.93.101.0/24 (port 53, so run as
root; only loopback is contacted, no other helper's addresses)::

    root   127.93.100.1            .      bench. -> a.nic.bench (.100.2), b.nic.bench (.100.3)
    tld    127.93.100.2, .100.3    bench  d0001..dNNNN.bench -> ns1/ns2.prov.bench (glue)
    prov   127.93.101.1, .101.2    prov.bench and every dNNNN.bench (apex NS = the parent's)

and checks every domain once per round, `--concurrency` checks in flight (like the scheduler's
limiter), in these variants, interleaved round by round so that load from elsewhere on the
machine hits them alike:

    cached      nameservers.check_delegation with one ZoneCache shared by all checks (what the
                exporter does since issue 9)
    uncached    the same without a cache: every check walks from the root
    before      (with --before REV) nameservers.py as it was at git revision REV
    raw-cached  the floor: raw dnspython sending what a check needs once the cuts are known:
                the domain's NS at a TLD server (alternating), then the apex NS at every glue
                address in parallel; no checks on the answers beyond "AA and an NS set"
    raw-walk    the same from the root (root referral, TLD referral, child probes)

Each variant is warmed up once (not timed). Printed: checks/s median and min-max over the rounds,
this process's CPU per check (less sensitive than checks/s to what else runs on the machine),
DNS messages per check, failed checks, and the ratios to the raw floors measured in the same run.

Measured 2026-11-27 on the project's 2-core machine (load average 5-6 from other work), with
`--domains 300 --rounds 9 --before 05fdc8f^` (05fdc8f^: before the zone-cut cache):

    variant     checks/s median (min-max)  CPU ms/check  msgs/check
    cached      217 (156-391)              2.30          3.0
    uncached     76 (45-123)               6.49          8.0
    before       84 (72-109)               6.45          8.0
    raw-cached  275 (215-536)              1.98          3.0
    raw-walk    179 (113-308)              2.86          4.0

    cached / raw-cached  0.87 checks/s (0.30-1.24 per round), 0.86 by CPU (0.69-1.10)
    cached / raw-walk    1.23 (0.53-1.96), 1.23 by CPU
    before / raw-walk    0.45 (0.32-0.65), 0.42 by CPU
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.version

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from exporter import nameservers  # noqa: E402
from exporter.config import DnsSettings  # noqa: E402
from exporter.zonecache import ZoneCache  # noqa: E402
from tests.faults.hostile_dns import KnotLab, KnotServer  # noqa: E402

ROOT = "127.93.100.1"
TLD = ("127.93.100.2", "127.93.100.3")
PROV = ("127.93.101.1", "127.93.101.2")
TIMEOUT = 2.0  # generous: on a busy shared machine even loopback Knot can be slow to answer

# One delegation check of a domain -> (DNS messages sent, whether it measured what it should).
Check = Callable[[str], Awaitable[tuple[int, bool]]]


def lab_servers(domains: list[str]) -> list[KnotServer]:
    labels = [d.split(".")[0] for d in domains]
    apex = "@ 3600 NS ns1.prov.bench.\n@ 3600 NS ns2.prov.bench.\n"
    return [
        KnotServer(
            "root",
            (ROOT,),
            {
                ".": f"""
@ NS a.root.bench.
a.root.bench. A {ROOT}
bench. 3600 NS a.nic.bench.
bench. 3600 NS b.nic.bench.
a.nic.bench. 3600 A {TLD[0]}
b.nic.bench. 3600 A {TLD[1]}
"""
            },
        ),
        KnotServer(
            "tld",
            TLD,
            {
                "bench": f"""
@ 3600 NS a.nic.bench.
@ 3600 NS b.nic.bench.
a.nic 3600 A {TLD[0]}
b.nic 3600 A {TLD[1]}
a.root A {ROOT}
prov 3600 NS ns1.prov
prov 3600 NS ns2.prov
ns1.prov 3600 A {PROV[0]}
ns2.prov 3600 A {PROV[1]}
"""
                + "".join(f"{x} 3600 NS ns1.prov\n{x} 3600 NS ns2.prov\n" for x in labels)
            },
        ),
        KnotServer(
            "prov",
            PROV,
            {
                "prov.bench": apex + f"ns1 3600 A {PROV[0]}\nns2 3600 A {PROV[1]}\n",
                **{d: apex for d in domains},
            },
        ),
    ]


# -- the raw dnspython floor -------------------------------------------------------------------


async def _ask(name: dns.name.Name, server: str) -> dns.message.Message:
    q = dns.message.make_query(name, dns.rdatatype.NS, use_edns=0, payload=1232)
    q.flags &= ~dns.flags.RD
    return await dns.asyncquery.udp(
        q, server, timeout=TIMEOUT, ignore_unexpected=True, ignore_errors=True
    )


def _glue(response: dns.message.Message) -> list[str]:
    return [
        rr.address
        for rrset in response.additional
        if rrset.rdtype == dns.rdatatype.A
        for rr in rrset
    ]


async def _children(name: dns.name.Name, referral: dns.message.Message) -> tuple[int, bool]:
    addresses = _glue(referral)
    answers = await asyncio.gather(*(_ask(name, a) for a in addresses), return_exceptions=True)
    ok = all(
        isinstance(a, dns.message.Message) and a.flags & dns.flags.AA and a.answer for a in answers
    )
    return len(addresses), ok


def raw_cached() -> Check:
    turn = 0

    async def check(domain: str) -> tuple[int, bool]:
        nonlocal turn
        turn += 1
        name = dns.name.from_text(domain)
        try:
            referral = await _ask(name, TLD[turn % len(TLD)])
        except dns.exception.Timeout:
            return 1, False
        sent, ok = await _children(name, referral)
        return 1 + sent, ok

    return check


def raw_walk() -> Check:
    async def check(domain: str) -> tuple[int, bool]:
        name = dns.name.from_text(domain)
        try:
            top = await _ask(name, ROOT)
            referral = await _ask(name, _glue(top)[0])
        except dns.exception.Timeout:
            return 2, False
        sent, ok = await _children(name, referral)
        return 2 + sent, ok

    return check


# -- the exporter's check ----------------------------------------------------------------------


def exporter_check(module: ModuleType, cache: ZoneCache | None) -> Check:
    settings = DnsSettings(root_servers=(ROOT,), timeout=TIMEOUT)

    async def check(domain: str) -> tuple[int, bool]:
        kwargs = {} if cache is None else {"cache": cache}
        d = await module.check_delegation(domain, settings, **kwargs)
        return int(d.queries), d.error is None and d.child == ("ns1.prov.bench", "ns2.prov.bench")

    return check


def load_before(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:exporter/nameservers.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="dnsbench-")) / "nameservers_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("nameservers_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# -- timing ------------------------------------------------------------------------------------


async def one_round(
    check: Check, domains: list[str], concurrency: int
) -> tuple[float, float, int, int]:
    """(checks per second, CPU milliseconds per check, DNS messages, failed checks) for one
    pass over `domains`. The CPU time is this process's only (Knot's is not in it)."""
    limiter = asyncio.Semaphore(concurrency)
    sent = failed = 0

    async def one(domain: str) -> None:
        nonlocal sent, failed
        async with limiter:
            count, ok = await check(domain)
        sent += count  # (never `sent += await ...`: the read would race the other checks)
        failed += not ok

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(d) for d in domains))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(domains) / wall, cpu * 1000 / len(domains), sent, failed


async def run(args: argparse.Namespace, domains: list[str]) -> None:
    variants: dict[str, Check] = {
        "cached": exporter_check(nameservers, ZoneCache()),
        "uncached": exporter_check(nameservers, None),
    }
    if args.before:
        variants["before"] = exporter_check(load_before(args.before), None)
    variants["raw-cached"] = raw_cached()
    variants["raw-walk"] = raw_walk()
    rates: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    messages: dict[str, float] = {}
    failures: dict[str, int] = dict.fromkeys(variants, 0)
    for check in variants.values():
        await one_round(check, domains, args.concurrency)  # warm-up (fills the cache)
    for _ in range(args.rounds):
        for name, check in variants.items():
            rate, ms, sent, failed = await one_round(check, domains, args.concurrency)
            failures[name] += failed
            rates[name].append(rate)
            cpu[name].append(ms)
            messages[name] = sent / len(domains)
    print(
        f"{len(domains)} domains x {args.rounds} rounds, {args.concurrency} checks in flight, "
        f"Python {sys.version.split()[0]}, dnspython {dns.version.version}"
    )
    print(
        f"{'variant':<11} {'checks/s median':>16} {'min-max':>13}  "
        f"{'CPU ms/check':>12} {'min-max':>11}  {'msgs/check':>10} {'failed':>6}"
    )
    for name, values in rates.items():
        print(
            f"{name:<11} {statistics.median(values):>16.0f} "
            f"{min(values):>6.0f}-{max(values):<6.0f}  "
            f"{statistics.median(cpu[name]):>12.2f} {min(cpu[name]):>5.2f}-{max(cpu[name]):<5.2f}  "
            f"{messages[name]:>10.1f} {failures[name]:>6}"
        )
    print("ratios per round (median, min-max): checks/s, and the inverse of CPU per check")

    def ratio(a: str, b: str) -> None:
        each = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        by_cpu = [y / x for x, y in zip(cpu[a], cpu[b], strict=True)]
        print(
            f"  {a} / {b}: checks/s {statistics.median(each):.2f} "
            f"({min(each):.2f}-{max(each):.2f}), CPU {statistics.median(by_cpu):.2f} "
            f"({min(by_cpu):.2f}-{max(by_cpu):.2f})"
        )

    ratio("cached", "raw-cached")
    ratio("cached", "raw-walk")
    ratio("uncached", "raw-walk")
    if args.before:
        ratio("before", "raw-walk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--before", metavar="REV", help="also time nameservers.py at git REV")
    args = parser.parse_args()
    domains = [f"d{i:04d}.bench" for i in range(1, args.domains + 1)]
    # The addresses are fixed (port 53): a second run (or the smoke test) waits for the first.
    lock = os.open(
        Path(tempfile.gettempdir()) / "domainwatch-127.93.100-bench.lock",
        os.O_RDWR | os.O_CREAT,
        0o666,
    )
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with KnotLab(Path(tempfile.mkdtemp(prefix="dnsbench-")), lab_servers(domains)):
            asyncio.run(run(args, domains))
    finally:
        os.close(lock)


if __name__ == "__main__":
    main()
