"""DNS politeness at scale (issue 9): the zone-cut cache shared by delegation checks, spreading
questions over a zone's servers, and counting them by kind of server.

The lab, on 127.93.0.0/16 port 53 (this module's own range)::

    root      127.93.0.1          Python, truthful (counts what it is asked)
                                  tst.   -> a.nic.tst (.0.2), b.nic.tst (.0.3)   TTL 60
                                  short. -> a.nic.short (.0.4)                   TTL 2
                                  dd.    -> a.nic.dd (127.93.9.1, dead), b.nic.dd (.0.5)
    tld-tst   127.93.0.2, .0.3    Python, truthful, one instance per address (counted apart)
    tld-short 127.93.0.4          Python: short.
    tld-dd    127.93.0.5          Python: dd.
    liar      127.93.5.1          Python: an intercepting network, NXDOMAIN without AA to all
    fibber    127.93.5.2          Python: a made-up A record (no AA) for every question; the only
                                  server of lie.tst, so ns1.lie.tst can only be "learnt" from it
    prov      127.93.1.1, .1.2    Knot: prov.tst and every child zone (d*.tst, s*.short, x*.dd)

Every check here walks from the lab root with a `ZoneCache` shared between checks (as the
exporter's DelegationCheck does), except where a test shows what happens without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import DnsSettings
from exporter.nameservers import SERVER_KINDS, Delegation, check_delegation
from exporter.selfmetrics import ExporterMetrics
from exporter.zonecache import RANK_ANSWER, RANK_GLUE, TTL_CAP, CachedServer, ZoneCache
from tests.faults.hostile_dns import (
    Behaviour,
    HostileDns,
    KnotLab,
    KnotServer,
    MiniZone,
    Transport,
    intercept,
    serve,
)

TIMEOUT = 0.3
ROOT = "127.93.0.1"
TST = ("127.93.0.2", "127.93.0.3")
SHORT = "127.93.0.4"
DD = "127.93.0.5"
DEAD = "127.93.9.1"
LIAR = "127.93.5.1"
FIBBER = "127.93.5.2"
PROV = ("ns1.prov.tst", "ns2.prov.tst")
DOMAINS = tuple(f"d{i}.tst" for i in range(1, 13))
REPO = Path(__file__).resolve().parent.parent

_ROOT_ZONE = """
@ NS a.root.tst.
a.root.tst. A 127.93.0.1
tst. 60 NS a.nic.tst.
tst. 60 NS b.nic.tst.
a.nic.tst. 60 A 127.93.0.2
b.nic.tst. 60 A 127.93.0.3
short. 2 NS a.nic.short.
a.nic.short. 2 A 127.93.0.4
dd. NS a.nic.dd.
dd. NS b.nic.dd.
a.nic.dd. A 127.93.9.1
b.nic.dd. A 127.93.0.5
"""
_TST_ZONE = """
@ NS a.nic.tst.
@ NS b.nic.tst.
a.nic A 127.93.0.2
b.nic A 127.93.0.3
a.root A 127.93.0.1
prov NS ns1.prov
prov NS ns2.prov
ns1.prov A 127.93.1.1
ns2.prov A 127.93.1.2
lie NS ns.lie
ns.lie A 127.93.5.2
victim NS ns1.lie
""" + "".join(f"d{i} NS ns1.prov\nd{i} NS ns2.prov\n" for i in range(1, 13))
_SHORT_ZONE = """
@ NS a.nic.short.
a.nic A 127.93.0.4
s1 NS ns1.prov.tst.
s1 NS ns2.prov.tst.
"""
_DD_ZONE = """
@ NS a.nic.dd.
@ NS b.nic.dd.
a.nic A 127.93.9.1
b.nic A 127.93.0.5
""" + "".join(f"x{i} NS ns1.prov.tst.\nx{i} NS ns2.prov.tst.\n" for i in range(1, 7))

_PROV_APEX = "@ NS ns1.prov.tst.\n@ NS ns2.prov.tst.\n"
_CHILD_ZONES = {
    "prov.tst": _PROV_APEX + "ns1 A 127.93.1.1\nns2 A 127.93.1.2\n",
    **{d: _PROV_APEX for d in DOMAINS},
    "s1.short": _PROV_APEX,
    **{f"x{i}.dd": _PROV_APEX for i in range(1, 7)},
}


def fibber() -> Behaviour:
    """A captive-portal resolver in the path: every A question gets 127.93.9.9, without AA."""

    def behaviour(q: dns.message.Message, transport: Transport) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        question = q.question[0]
        if question.rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(question.name, 3600, "IN", "A", "127.93.9.9"))
        return r

    return behaviour


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Our addresses are fixed (port 53): a second test process waits for the first."""
    path = Path(tempfile.gettempdir()) / "domainwatch-127.93-zonecache.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileDns]:
    tst = MiniZone("tst", _TST_ZONE)
    with (
        _lock(),
        KnotLab(
            tmp_path_factory.mktemp("zonecache"),
            [KnotServer("prov", ("127.93.1.1", "127.93.1.2"), _CHILD_ZONES)],
        ),
        HostileDns(
            {
                ROOT: serve(MiniZone(".", _ROOT_ZONE)),
                TST[0]: serve(tst),
                TST[1]: serve(tst),
                SHORT: serve(MiniZone("short", _SHORT_ZONE)),
                DD: serve(MiniZone("dd", _DD_ZONE)),
                LIAR: intercept(),
                FIBBER: fibber(),
            }
        ) as servers,
    ):
        yield servers


def rooted(*roots: str) -> DnsSettings:
    return DnsSettings(root_servers=roots or (ROOT,), timeout=TIMEOUT)


async def _checks(
    domains: tuple[str, ...], cache: ZoneCache | None, *, together: bool = False
) -> list[Delegation]:
    if together:
        return list(
            await asyncio.gather(*(check_delegation(d, rooted(), cache=cache) for d in domains))
        )
    return [await check_delegation(d, rooted(), cache=cache) for d in domains]


def checks(
    domains: tuple[str, ...], cache: ZoneCache | None, *, together: bool = False
) -> list[Delegation]:
    results = asyncio.run(_checks(domains, cache, together=together))
    for d in results:
        assert (d.error, d.parent, d.child) == (None, PROV, PROV), d
        assert sum(d.query_kinds.values()) == d.queries
    return results


def kinds(results: list[Delegation]) -> Counter[str]:
    total: Counter[str] = Counter()
    for d in results:
        total.update(d.query_kinds)
    return total


# -- the cache on its own (a fake clock) ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


N = dns.name.from_text


def test_entries_live_for_their_ttl_within_floor_and_cap() -> None:
    clock = Clock()
    cache = ZoneCache(min_ttl=60, max_ttl=3600, clock=clock)
    servers = (CachedServer(N("a.nic.tst"), (("127.93.0.2", 53),)),)
    cache.put_cut(N("tst"), servers, 0)  # TTL 0 is held for the floor
    cache.put_cut(N("long"), servers, 10**7)  # a week-long TTL is held for the cap
    cache.put_addresses(N("a.nic.tst"), dns.rdatatype.A, (("127.93.0.2", 53),), 120, rank=RANK_GLUE)
    clock.now += 59
    assert cache.cut(N("tst")) == servers
    clock.now += 2
    assert cache.cut(N("tst")) is None
    assert cache.addresses(N("a.nic.tst"), dns.rdatatype.A) == (("127.93.0.2", 53),)
    clock.now += 60
    assert cache.addresses(N("a.nic.tst"), dns.rdatatype.A) is None
    assert cache.cut(N("long")) == servers
    clock.now = 1000 + 3601
    assert cache.cut(N("long")) is None
    assert ZoneCache(max_ttl=10 * TTL_CAP).max_ttl == TTL_CAP  # never beyond the documented cap
    with pytest.raises(ValueError, match="min_ttl"):
        ZoneCache(min_ttl=10, max_ttl=5)


def test_bounded_lru() -> None:
    cache = ZoneCache(max_entries=3)
    for i in range(5):
        cache.put_cut(N(f"z{i}"), (CachedServer(N("ns.x"), None),), 60)
        cache.put_addresses(N(f"ns{i}.x"), dns.rdatatype.A, (), 60, rank=RANK_ANSWER)
    assert cache.size == (3, 3)
    assert cache.cut(N("z0")) is None and cache.cut(N("z4")) is not None


def test_glue_never_overrides_an_authoritative_answer() -> None:
    cache = ZoneCache()
    name = N("ns1.prov.tst")
    cache.put_addresses(name, dns.rdatatype.A, (("127.93.1.1", 53),), 60, rank=RANK_ANSWER)
    cache.put_addresses(name, dns.rdatatype.A, (("127.93.7.7", 53),), 60, rank=RANK_GLUE)
    assert cache.addresses(name, dns.rdatatype.A) == (("127.93.1.1", 53),)


def test_turns_and_backoff() -> None:
    clock = Clock()
    cache = ZoneCache(backoff=30, clock=clock)
    assert [cache.turn(N("tst"), 3) for _ in range(4)] == [0, 1, 2, 0]
    cache.timed_out(("127.93.9.1", 53))
    assert cache.backing_off(("127.93.9.1", 53))
    clock.now += 31
    assert not cache.backing_off(("127.93.9.1", 53))
    cache.timed_out(("127.93.9.1", 53))
    cache.answered(("127.93.9.1", 53))
    assert not cache.backing_off(("127.93.9.1", 53))


def test_other_roots_empty_the_cache() -> None:
    cache = ZoneCache()
    cache.bind((("127.93.0.1", 53),))
    cache.put_cut(N("tst"), (CachedServer(N("a.nic.tst"), None),), 60)
    cache.bind((("127.93.0.1", 53),))
    assert cache.cut(N("tst")) is not None
    cache.bind((("127.93.0.9", 53),))
    assert cache.cut(N("tst")) is None


def test_record_dns_by_server_kind() -> None:
    registry = CollectorRegistry()
    metrics = ExporterMetrics(registry)
    metrics.record_dns("success", "root")
    metrics.record_dns("timeout", "no-such-kind")
    metrics.record_dns("nxdomain")  # mail lookups: a resolver

    def value(outcome: str, kind: str) -> float | None:
        return registry.get_sample_value(
            "domainwatch_dns_queries_total", {"outcome": outcome, "server_kind": kind}
        )

    assert value("success", "root") == 1
    assert value("timeout", "resolver") == 1
    assert value("nxdomain", "resolver") == 1
    assert all(value("refused", k) == 0 for k in SERVER_KINDS)  # pre-created


# -- against the lab -----------------------------------------------------------------------------


def test_root_asked_once_for_many_domains_under_one_tld(lab: HostileDns) -> None:
    # Without a cache every check walks from the root (what the test below must beat).
    before = lab.count(ROOT)
    checks(DOMAINS[:4], None)
    assert lab.count(ROOT) - before == 4

    cache = ZoneCache()
    before = lab.count(ROOT)
    results = checks(DOMAINS, cache)
    assert lab.count(ROOT) - before == 1
    assert kinds(results)["root"] == 1
    assert results[0].query_kinds["root"] == 1
    # Warm: the parent is still asked every time (the measurement is never cached), the root
    # and the TLD servers' addresses are not, and no address is looked up again.
    for d in results[1:]:
        assert d.query_kinds == {"tld": 1, "child": 2}, d.query_kinds


def test_checks_that_start_together_ask_the_root_once(lab: HostileDns) -> None:
    cache = ZoneCache()
    before = lab.count(ROOT)
    results = checks(DOMAINS, cache, together=True)
    assert lab.count(ROOT) - before == 1
    assert kinds(results)["root"] == 1


def test_ttl_expiry_is_honoured(lab: HostileDns) -> None:
    """short. is delegated with TTL 2 s (NS and glue); a floor of 0.5 s lets it expire."""
    cache = ZoneCache(min_ttl=0.5)
    (first,) = checks(("s1.short",), cache)
    # The first check asks the root for short. and (for its nameservers' names) for tst.
    assert first.query_kinds["root"] == 2
    before = lab.count(ROOT)
    (second,) = checks(("s1.short",), cache)
    assert "root" not in second.query_kinds  # within the TTL: from the cache
    time.sleep(2.2)
    (third,) = checks(("s1.short",), cache)
    assert third.query_kinds["root"] == 1  # short. expired (tst. with TTL 60 did not)
    assert lab.count(ROOT) - before == 1
    # With the default floor (60 s) the 2 s TTL is held longer: no second root question.
    floored = ZoneCache()
    checks(("s1.short",), floored)
    time.sleep(2.2)
    (again,) = checks(("s1.short",), floored)
    assert "root" not in again.query_kinds


def test_queries_spread_over_the_parents_servers(lab: HostileDns) -> None:
    cache = ZoneCache()
    checks(DOMAINS[:1], cache)  # warm
    before = [lab.count(a) for a in TST]
    checks(DOMAINS, cache)
    asked = [lab.count(a) - b for a, b in zip(TST, before, strict=True)]
    assert sum(asked) == len(DOMAINS)
    assert min(asked) >= len(DOMAINS) // 2 - 1, asked  # both TLD servers share the load
    # Without the cache the same server is asked first every time.
    before = [lab.count(a) for a in TST]
    checks(DOMAINS[:4], None)
    asked = [lab.count(a) - b for a, b in zip(TST, before, strict=True)]
    assert min(asked) == 0, asked


def test_a_server_that_timed_out_is_asked_last(lab: HostileDns) -> None:
    """dd. has a dead server and a live one: after one timeout, the dead one waits its turn
    behind the live one for the back-off, instead of costing every other check a timeout."""

    def timeouts(cache: ZoneCache | None) -> int:
        outcomes: Counter[str] = Counter()

        async def run() -> None:
            for i in range(1, 7):
                d = await check_delegation(
                    f"x{i}.dd", rooted(), on_query=lambda o: outcomes.update([o]), cache=cache
                )
                assert (d.error, d.parent) == (None, PROV), d

        asyncio.run(run())
        return outcomes["timeout"]

    assert timeouts(ZoneCache()) == 1
    # Taking turns without the back-off would ask the dead server first every other check.
    assert timeouts(ZoneCache(backoff=0)) == 3


def test_non_authoritative_answers_never_enter_the_cache(lab: HostileDns) -> None:
    # An intercepting network as the only root: no verdict, and nothing remembered.
    cache = ZoneCache()
    for _ in range(2):
        before = lab.count(LIAR)
        d = asyncio.run(check_delegation("d1.tst", rooted(LIAR), cache=cache))
        assert (d.error, d.delegated, d.parent) == ("not_authoritative", None, None)
        assert lab.count(LIAR) > before  # asked again: the made-up answer was not kept
    assert cache.size == (0, 0)

    # The only server of lie.tst makes up an A record for ns1.lie.tst (no AA): the name stays
    # unresolved, the made-up address is never cached, and the next check asks again.
    cache = ZoneCache()
    for _ in range(2):
        before = lab.count(FIBBER)
        d = asyncio.run(check_delegation("victim.tst", rooted(), cache=cache))
        assert d.parent == ("ns1.lie.tst",)
        assert d.skipped == {"ns1.lie.tst": "unresolved"}, d
        assert lab.count(FIBBER) > before
        assert cache.addresses(N("ns1.lie.tst"), dns.rdatatype.A) is None
        assert cache.addresses(N("ns1.lie.tst"), dns.rdatatype.AAAA) is None
    # What real servers said on the way stays: the tst. cut. The lie.tst cut went again when
    # its only server gave no usable answer.
    assert cache.cut(N("tst")) is not None and cache.cut(N("lie.tst")) is None
    assert cache.cut(N("victim.tst")) is None  # the measured referral itself never is


def test_a_cut_whose_servers_all_fail_is_dropped(lab: HostileDns) -> None:
    """A cached cut gone stale (tst. renumbered to a dead address) fails one check, not every
    check until its TTL ends: the next one walks from the root again."""
    cache = ZoneCache()
    cache.bind(((ROOT, 53),))
    cache.put_cut(N("tst"), (CachedServer(N("a.nic.tst"), ((DEAD, 53),)),), 3600)
    d = asyncio.run(check_delegation("d1.tst", rooted(), cache=cache))
    assert (d.error, d.parent, d.query_kinds) == ("timeout", None, {"tld": 1}), d
    assert cache.cut(N("tst")) is None
    (d,) = checks(("d1.tst",), cache)
    assert d.query_kinds["root"] == 1


def test_resolver_mode_leaves_the_cache_alone(lab: HostileDns) -> None:
    cache = ZoneCache()
    settings = DnsSettings(resolvers=(LIAR,), root_servers=(ROOT,), timeout=TIMEOUT)
    d = asyncio.run(check_delegation("d1.tst", settings, cache=cache))
    assert d.error == "not_authoritative"
    assert d.query_kinds.keys() == {"resolver"}
    assert cache.size == (0, 0)


def test_exporter_counters_by_server_kind(lab: HostileDns) -> None:
    registry = CollectorRegistry()
    metrics = ExporterMetrics(registry)
    cache = ZoneCache()

    async def run() -> None:
        for domain in DOMAINS[:5]:
            await check_delegation(domain, rooted(), on_query_kind=metrics.record_dns, cache=cache)

    asyncio.run(run())

    def value(kind: str) -> float | None:
        return registry.get_sample_value(
            "domainwatch_dns_queries_total", {"outcome": "success", "server_kind": kind}
        )

    assert value("root") == 1
    assert value("tld") == 5 + 1  # one parent question per domain, one referral to prov.tst
    assert value("child") == 5 * 2 + 2  # two apex probes per domain, AAAA of both NS names
    assert value("resolver") == 0 and value("parent") == 0


def test_benchmark_smoke() -> None:
    """bench/dnscheck.py still runs (a tiny run on its own addresses, 127.93.100-101.x)."""
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "dnscheck.py"),
            "--domains",
            "4",
            "--rounds",
            "1",
            "--concurrency",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    assert "cached / raw-cached" in done.stdout, done.stdout
    assert re.search(r"^cached +\d+ .* 3\.0 +0$", done.stdout, re.MULTILINE), done.stdout
