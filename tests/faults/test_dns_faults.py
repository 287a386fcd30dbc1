"""Fault matrix, DNS part (issue 8): hostile authoritative servers against the delegation probe.

Every cell runs `check_delegation` against Python servers of our own (tests/faults/hostile_dns.py,
127.84.20.0/24 and 127.84.21.0/24, port 53) and asserts that the check ends within its deadline
(`check_deadline`: 4 x dns.timeout), sends at most QUERY_BUDGET messages, and fails with a
bounded reason, keeping what it measured. With DOMAINWATCH_FAULT_REPORT set, each cell is
recorded via tests/faults/report.py.

    root 127.84.20.1  ->  bad. (127.84.20.2), wid. (127.84.20.6: wrong IDs), wq. (127.84.20.8:
                          wrong question section)
    bad.  many       1,000 NS names, their addresses silent (127.84.21.1-20, TCP held open)
          loop       glueless NS names that depend on each other (loop -> loop2 -> loop3 -> loop2)
          pingpong   its server refers to pingpong.bad again (sideways); upward: refers to bad.
          cname      ns-ok.bad (healthy) + ns-loop.bad, a CNAME loop
          chain      16 NS names behind CNAME chains: only the query budget stops it
          wrongid    its server answers with wrong IDs (127.84.20.5)
          wq         its server answers another question (127.84.20.7)
          tc         TC=1 over UDP, TCP accepted and never answered (127.84.20.9)
          silent     its server never answers (127.84.20.11); root 127.84.20.10 is silent too
          huge       child apex NS set of 1,002 names (a 30 KB answer over TCP)
          ok         healthy, checked alongside the worst cell
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from exporter.config import DnsSettings
from exporter.nameservers import (
    MAX_NS_PER_ZONE,
    QUERY_BUDGET,
    Delegation,
    check_deadline,
    check_delegation,
)
from tests.faults.hostile_dns import (
    HostileDns,
    MiniZone,
    lab_lock,
    refer,
    serve,
    silent,
    truncate_then_hold,
    wrong_id,
    wrong_question,
)
from tests.faults.report import record, rss_mb

TIMEOUT = 0.3
SETTINGS = DnsSettings(root_servers=("127.84.20.1",), timeout=TIMEOUT)
DEADLINE = check_deadline(SETTINGS)
SLACK = 0.6  # scheduling noise on a busy 2-core machine
# The 1,000-name referral takes our single-threaded Python server ~0.4 s to build (twice: UDP,
# then TCP), so that cell gets a longer timeout to show the probes' own bound (2 x timeout).
MANY_SETTINGS = DnsSettings(root_servers=("127.84.20.1",), timeout=0.6)
MANY = 1000
SILENT_HOSTS = [f"127.84.21.{i}" for i in range(1, 21)]
HUGE_EXTRA = [f"ns{i:04d}.far-away-hosting.example" for i in range(MANY)]

ROOT_ZONE = """
@ NS a.root.bad.
a.root.bad. A 127.84.20.1
bad. NS ns.bad.
ns.bad. A 127.84.20.2
wid. NS ns.wid.
ns.wid. A 127.84.20.6
wq. NS ns.wq.
ns.wq. A 127.84.20.8
"""

BAD_ZONE = (
    """
@ NS ns.bad.
ns A 127.84.20.2
ns-ok A 127.84.20.4
ok NS ns-ok
loop NS ns.x.loop2
loop2 NS ns.y.loop3
loop3 NS ns.x.loop2
pingpong NS ns.pp
ns.pp A 127.84.20.3
upward NS ns.up
ns.up A 127.84.20.13
cname NS ns-ok
cname NS ns-loop
ns-loop CNAME ns-loop2
ns-loop2 CNAME ns-loop
wrongid NS ns-wid
ns-wid A 127.84.20.5
wq NS ns-wq
ns-wq A 127.84.20.7
tc NS ns-tc
ns-tc A 127.84.20.9
silent NS ns-silent
ns-silent A 127.84.20.11
huge NS ns-ok
"""
    + "".join(f"many NS ns{i:04d}.hosting\n" for i in range(MANY))
    + "".join(f"ns{i:04d}.hosting A {SILENT_HOSTS[i % len(SILENT_HOSTS)]}\n" for i in range(MANY))
    + "".join(f"chain NS ns-c{i:02d}\nns-c{i:02d} CNAME hop1\n" for i in range(16))
    + "".join(f"hop{i} CNAME hop{i + 1}\n" for i in range(1, 8))
)

CHILD_ZONES = {
    "ok.bad": "@ NS ns-ok.bad.\n",
    "cname.bad": "@ NS ns-ok.bad.\n@ NS ns-loop.bad.\n",
    "huge.bad": "@ NS ns-ok.bad.\n" + "".join(f"@ NS {n}.\n" for n in HUGE_EXTRA),
    "wrongid.bad": "@ NS ns-wid.bad.\n",
    "wq.bad": "@ NS ns-wq.bad.\n",
}


def _tld(origin: str, address: str) -> MiniZone:
    return MiniZone(origin, f"@ NS ns.{origin}.\nns A {address}\nx NS ns-ok.bad.\n")


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileDns]:
    children = serve(*(MiniZone(o, body) for o, body in CHILD_ZONES.items()))
    behaviours = {
        "127.84.20.1": serve(MiniZone(".", ROOT_ZONE)),
        "127.84.20.2": serve(MiniZone("bad", BAD_ZONE)),
        "127.84.20.3": refer("pingpong.bad.", "ns.pp.bad."),
        "127.84.20.13": refer("bad.", "ns.bad."),
        "127.84.20.4": children,
        "127.84.20.5": wrong_id(children),
        "127.84.20.6": wrong_id(serve(_tld("wid", "127.84.20.6"))),
        "127.84.20.7": wrong_question(children),
        "127.84.20.8": wrong_question(serve(_tld("wq", "127.84.20.8"))),
        "127.84.20.9": truncate_then_hold(),
        "127.84.20.10": silent(),
        "127.84.20.11": silent(),
        **{a: silent() for a in SILENT_HOSTS},
    }
    with lab_lock("faults"), HostileDns(behaviours) as server:
        yield server


def check(domain: str, settings: DnsSettings = SETTINGS) -> tuple[Delegation, float]:
    start = time.monotonic()
    d = asyncio.run(check_delegation(domain, settings))
    return d, time.monotonic() - start


def finish(
    cell: str, d: Delegation, seconds: float, problems: list[str], deadline: float = DEADLINE
) -> None:
    """The bounds every cell shares, then one report line, then the verdict."""
    if seconds > deadline + SLACK:
        problems.append(f"took {seconds:.2f}s, deadline {deadline:.2f}s")
    if d.queries > QUERY_BUDGET:
        problems.append(f"{d.queries} queries > budget {QUERY_BUDGET}")
    record(cell, d.error or "success", seconds, rss_mb(os.getpid()), not problems)
    # A summary, not the Delegation: a 1,000-name set would drown the message.
    summary = dict(
        error=d.error, delegated=d.delegated, parent_names=len(d.parent or ()),
        queries=d.queries, lame=dict(list(d.lame.items())[:4]),
    )
    assert not problems, f"{cell}: {problems} {summary}"


def expect(problems: list[str], what: str, ok: bool) -> None:
    if not ok:
        problems.append(what)


def test_delegated_to_1000_silent_nameservers(hostile: HostileDns) -> None:
    d, seconds = check("many.bad", MANY_SETTINGS)
    p: list[str] = []
    expect(p, f"error {d.error}", d.error in ("unreachable", "deadline", "query_budget"))
    expect(p, "parent set kept", d.delegated is True and len(d.parent or ()) == MANY)
    expect(p, "no child answered", d.child is None)
    probed = [ns for ns, r in d.lame.items() if r is not None]
    expect(p, f"{len(probed)} probed", len(probed) == MAX_NS_PER_ZONE)
    expect(p, "the rest not probed", list(d.skipped.values()).count("not_probed") >= MANY - 16)
    received = sum(hostile.count(a) for a in SILENT_HOSTS)
    expect(p, f"{received} queries at the silent servers", received <= 2 * MAX_NS_PER_ZONE)
    finish("dns_1000_silent_nameservers", d, seconds, p, check_deadline(MANY_SETTINGS))


def test_neighbour_check_unaffected_by_the_worst_cell(hostile: HostileDns) -> None:
    async def both() -> tuple[Delegation, float, Delegation]:
        start = time.monotonic()
        many = asyncio.ensure_future(check_delegation("many.bad", MANY_SETTINGS))
        ok = await check_delegation("ok.bad", SETTINGS)
        ok_seconds = time.monotonic() - start
        return ok, ok_seconds, await many

    ok, seconds, many = asyncio.run(both())
    p: list[str] = []
    expect(p, f"ok.bad: {ok}", (ok.error, ok.parent, ok.child) == (None, ("ns-ok.bad",),
                                                                     ("ns-ok.bad",)))
    # Its own queries wait behind the big referral in our one-thread server, not in the probe.
    expect(p, f"ok.bad took {seconds:.2f}s", seconds < 1.0)
    expect(p, f"many.bad: {many.error}", many.error is not None)
    finish("dns_neighbour_of_1000_nameservers", ok, seconds, p)


def test_glueless_nameservers_that_depend_on_each_other(hostile: HostileDns) -> None:
    d, seconds = check("loop.bad")
    p: list[str] = []
    expect(p, f"error {d.error}", d.error == "unreachable")
    expect(p, "parent kept", d.parent == ("ns.x.loop2.bad",))
    expect(p, f"skipped {d.skipped}", d.skipped == {"ns.x.loop2.bad": "unresolved"})
    expect(p, "not lame", d.lame == {})
    finish("dns_referral_loop_glueless", d, seconds, p)


@pytest.mark.parametrize("domain", ["x.pingpong.bad", "x.upward.bad"])
def test_referral_sideways_or_upwards(hostile: HostileDns, domain: str) -> None:
    d, seconds = check(domain)
    p: list[str] = []
    expect(p, f"error {d.error}", d.error == "invalid_response")
    expect(p, "no verdict", (d.delegated, d.parent) == (None, None))
    finish(f"dns_referral_loop_{domain.split('.')[1]}", d, seconds, p)


def test_cname_loop_for_a_nameserver_address(hostile: HostileDns) -> None:
    d, seconds = check("cname.bad")
    p: list[str] = []
    expect(p, f"error {d.error}", d.error is None)
    expect(p, f"lame {d.lame}", d.lame == {"ns-loop.bad": "no_address", "ns-ok.bad": None})
    expect(p, f"{d.queries} queries", d.queries <= 16)
    finish("dns_cname_loop", d, seconds, p)


def test_cname_chains_exhaust_the_query_budget(hostile: HostileDns) -> None:
    d, seconds = check("chain.bad")
    p: list[str] = []
    expect(p, f"error {d.error}", d.error == "query_budget")
    expect(p, f"{d.queries} queries", d.queries == QUERY_BUDGET)
    expect(p, "parent kept", d.delegated is True and len(d.parent or ()) == 16)
    finish("dns_query_budget", d, seconds, p)


@pytest.mark.parametrize("where", ["child", "parent"])
@pytest.mark.parametrize("fault", ["wrong_id", "wrong_question"])
def test_responses_that_do_not_match_the_query(
    hostile: HostileDns, fault: str, where: str
) -> None:
    domain = {
        ("wrong_id", "child"): "wrongid.bad",
        ("wrong_id", "parent"): "x.wid",
        ("wrong_question", "child"): "wq.bad",
        ("wrong_question", "parent"): "x.wq",
    }[(fault, where)]
    d, seconds = check(domain)
    p: list[str] = []
    if where == "child":
        # Ignored over UDP until the timeout, rejected over TCP: the server is lame, and as
        # the only one, the check is `unreachable` with the parent set kept.
        expect(p, f"error {d.error}", d.error == "unreachable")
        expect(p, f"lame {d.lame}", list(d.lame.values()) == ["timeout"])
        expect(p, "parent kept", d.delegated is True and d.parent is not None)
    else:
        expect(p, f"error {d.error}", d.error == "timeout")
        expect(p, "no verdict", (d.delegated, d.parent) == (None, None))
    finish(f"dns_{fault}_{where}", d, seconds, p)


def test_truncated_udp_and_tcp_that_never_answers(hostile: HostileDns) -> None:
    d, seconds = check("tc.bad")
    p: list[str] = []
    expect(p, f"error {d.error}", d.error == "unreachable")
    expect(p, f"lame {d.lame}", d.lame == {"ns-tc.bad": "timeout"})
    expect(p, f"took {seconds:.2f}s", seconds < 2 * TIMEOUT + SLACK)  # one TCP wait, no more
    finish("dns_truncated_then_tcp_silent", d, seconds, p)


@pytest.mark.parametrize("where", ["root", "child"])
def test_total_silence(hostile: HostileDns, where: str) -> None:
    if where == "root":
        d, seconds = check("ok.bad", DnsSettings(root_servers=("127.84.20.10",), timeout=TIMEOUT))
    else:
        d, seconds = check("silent.bad")
    p: list[str] = []
    if where == "root":
        expect(p, f"error {d.error}", d.error == "timeout")
        expect(p, "no verdict", (d.delegated, d.parent) == (None, None))
        expect(p, f"{d.queries} queries", d.queries == 1)  # no TCP retry on the way down
    else:
        expect(p, f"error {d.error}", d.error == "unreachable")
        expect(p, f"lame {d.lame}", d.lame == {"ns-silent.bad": "timeout"})
    finish(f"dns_silence_{where}", d, seconds, p)


def test_huge_child_ns_set_over_tcp(hostile: HostileDns) -> None:
    d, seconds = check("huge.bad")
    p: list[str] = []
    expect(p, f"error {d.error}", d.error is None)
    expect(p, "full set", len(d.child or ()) == MANY + 1)
    expect(p, "inconsistent", d.inconsistent is True)
    expect(p, "no mismatch", d.mismatch(None, ["ns-ok.bad"]) is False)
    finish("dns_huge_ns_set", d, seconds, p)
