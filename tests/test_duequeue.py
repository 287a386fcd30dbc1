"""The scheduler's timetable (exporter/duequeue.py) and the start-up paths built on it.

The queue replaced a heap of (due, seq, domain, check) tuples plus a dict of live entries; the
model below is that old structure, and a random walk of pushes, fills, removals and pops must
leave both in the same order at the same times. Then: the scheduler's one-pass start-up gives
every restored check the due time the per-entry path gives it, checks due at once leave in
config order, and the per-parent look-ups of lanes and RDAP servers equal the per-domain ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter import cli
from exporter.checks.registration import RegistrationCheck
from exporter.checks.whois import WhoisCheck
from exporter.config import Config, DomainConfig, RdapSettings, WhoisSettings
from exporter.duequeue import DueQueue
from exporter.store import CheckState

KINDS = ("rdap", "whois", "dns", "email", "dnssec", "nsdomain")


class OldQueue:
    """The structure DueQueue replaced, as the scheduler used it."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, str, str]] = []
        self.live: dict[tuple[str, str], int] = {}
        self.seq = itertools.count()

    def push(self, due: float, domain: str, kind: str) -> None:
        seq = next(self.seq)
        heapq.heappush(self.heap, (due, seq, domain, kind))
        self.live[(domain, kind)] = seq

    def forget(self, domain: str) -> None:
        for kind in KINDS:
            self.live.pop((domain, kind), None)

    def pop_due(self, now: float) -> list[tuple[str, str]]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            _due, seq, domain, kind = heapq.heappop(self.heap)
            if self.live.get((domain, kind)) == seq:
                del self.live[(domain, kind)]
                out.append((domain, kind))
        return out


# --- the queue ---------------------------------------------------------------------------------


def test_pops_in_due_order_and_a_push_supersedes() -> None:
    q = DueQueue(KINDS, origin=1000.0)
    q.push(1010.0, "b.example", "dns")
    q.push(1005.0, "a.example", "rdap")
    q.push(1020.0, "a.example", "dns")
    q.push(1030.0, "b.example", "dns")  # the 1010 entry is stale now
    assert q.pop_due(1004.999) == []
    assert q.next_due() == 1005.0
    assert q.pop_due(1025.0) == [("a.example", "rdap"), ("a.example", "dns")]
    assert q.scheduled("b.example", "dns") and q.due("b.example", "dns") == 1030.0
    assert not q.scheduled("a.example", "dns")  # popped: in flight until pushed again
    assert q.pop_due(1030.0) == [("b.example", "dns")]
    assert q.items() == {}


def test_nothing_leaves_before_its_exact_due_time() -> None:
    # Keys count whole milliseconds; two entries 0.1 ms apart share one, yet each leaves only
    # once its own time has come.
    q = DueQueue(KINDS, origin=0.0)
    q.push(5.0001, "a.example", "rdap")
    q.push(5.0002, "b.example", "rdap")
    assert q.pop_due(5.00015) == [("a.example", "rdap")]
    assert q.next_due() == 5.0002
    assert q.pop_due(5.0002) == [("b.example", "rdap")]


def test_forget_drops_a_domain_and_its_slot_is_reused_cleanly() -> None:
    q = DueQueue(KINDS, origin=0.0)
    q.push(10.0, "gone.example", "dns")
    q.push(20.0, "stay.example", "dns")
    q.forget("gone.example")
    q.push(30.0, "new.example", "dns")  # takes the freed slot; the old key must stay dead
    assert q.pop_due(15.0) == []
    assert q.pop_due(40.0) == [("stay.example", "dns"), ("new.example", "dns")]
    q.push(50.0, "a.example", "rdap")
    q.keep_only({"b.example"})
    assert q.pop_due(60.0) == [] and q.items() == {}


def test_entries_beyond_the_horizon_leave_on_time() -> None:
    q = DueQueue(KINDS, origin=0.0, horizon=100.0)
    q.fill(
        ["a.example", "b.example"],
        [[10.0, 500.0], [250.0, 90.0], *([[1e6, 1e6]] * (len(KINDS) - 2))],
    )
    assert len(q) == 2  # 10 and 90: the rest wait outside the heap
    q.push(5000.0, "c.example", "dns")
    assert len(q) == 2 and q.due("c.example", "dns") == 5000.0
    q.forget("c.example")
    assert q.next_due() == 10.0
    assert q.pop_due(10.0) == [("a.example", "rdap")]
    assert q.pop_due(90.0) == [("b.example", "whois")]
    # Nothing in the heap: the queue asks to be called when the horizon needs moving (it
    # moved to 190 at 90, half a span before 100).
    assert q.next_due() == 140.0
    assert q.pop_due(140.0) == []  # horizon 240
    assert q.next_due() == 190.0
    assert q.pop_due(249.9) == []  # horizon 349.9: 250 joined the heap
    assert q.next_due() == 250.0
    q.push(260.0, "b.example", "rdap")  # supersedes the far 500 before it joined
    assert q.pop_due(1000.0) == [("a.example", "whois"), ("b.example", "rdap")]
    assert q.items() == {(d, k): 1e6 for d in ("a.example", "b.example") for k in KINDS[2:]}


def test_fill_keeps_existing_entries_and_checks_its_columns() -> None:
    q = DueQueue(KINDS, origin=0.0)
    q.push(7.0, "a.example", "dns")
    added = q.fill(["a.example", "b.example"], [[1.0, 2.0]] * len(KINDS))
    assert added == 2 * len(KINDS) - 1
    assert q.due("a.example", "dns") == 7.0 and q.due("b.example", "dns") == 2.0
    with pytest.raises(ValueError):
        q.fill(["c.example"], [[1.0]] * (len(KINDS) - 1))
    with pytest.raises(ValueError):
        q.fill(["c.example"], [[1.0, 2.0]] * len(KINDS))


def test_same_millisecond_leaves_in_slot_order_as_pushed_at_start_up() -> None:
    names = [f"d{i}.example" for i in range(50)]
    q = DueQueue(KINDS, origin=3.0)
    q.fill(names, [[3.0] * len(names)] * len(KINDS))
    assert q.pop_due(3.0) == [(n, k) for n in names for k in KINDS]


def test_more_domains_than_the_codes_held_keeps_the_order() -> None:
    # 16 low bits hold 65,536 codes: the 11,000th domain's checks widen every key.
    q = DueQueue(KINDS, origin=0.0)
    q.push(2.0, "early.example", "dns")
    q.push(900.0, "late.example", "dns")
    names = [f"d{i}.example" for i in range(11_000)]
    q.fill(names, [[float(i % 500) + 1.5 for i in range(len(names))]] * len(KINDS))
    assert q.pop_due(1.6)[:2] == [("d0.example", "rdap"), ("d0.example", "whois")]
    assert q.pop_due(2.0) == [("early.example", "dns")]
    popped = q.pop_due(899.0)
    assert len(popped) == (len(names) - 22) * len(KINDS)
    assert q.pop_due(900.0) == [("late.example", "dns")]


@pytest.mark.parametrize("seed", range(6))
def test_random_walk_matches_the_old_heap(seed: int) -> None:
    rnd = random.Random(seed)
    names = [f"d{i}.example" for i in range(40)]
    new, old = DueQueue(KINDS, origin=100.0, horizon=rnd.choice([5.0, 60.0, 1e9])), OldQueue()
    now = 100.0
    dues: dict[tuple[str, str], float] = {}  # the live due time of each pair
    # Steps of 1/64 s (exact in binary), so that equal due times are equal and distinct ones
    # are keys apart: the old heap broke ties by push order, the new one by slot; compare ties
    # as sets. (Times within one millisecond leave in slot order: the module says so.)
    for _ in range(1500):
        op = rnd.random()
        if op < 0.55:
            due = now + rnd.randrange(0, 12_800) / 64
            domain, kind = rnd.choice(names), rnd.choice(KINDS)
            new.push(due, domain, kind)
            old.push(due, domain, kind)
            dues[(domain, kind)] = due
        elif op < 0.6:
            domain = rnd.choice(names)
            new.forget(domain)
            old.forget(domain)
        elif op < 0.65:
            batch = rnd.sample(names, 5)
            columns = [[now + rnd.randrange(0, 3200) / 64 for _ in batch] for _ in KINDS]
            new.fill(batch, columns)
            for i, name in enumerate(batch):
                for k, kind in enumerate(KINDS):
                    if (name, kind) not in old.live:
                        old.push(columns[k][i], name, kind)
                        dues[(name, kind)] = columns[k][i]
        else:
            now += rnd.randrange(0, 1920) / 64
            got, want = new.pop_due(now), old.pop_due(now)
            assert _grouped(got, dues) == _grouped(want, dues)
            assert next_due(new) == next_due(old)
        assert new.items() == {pair: dues[pair] for pair in old.live}


def _grouped(
    popped: list[tuple[str, str]], dues: dict[tuple[str, str], float]
) -> list[tuple[float, set[tuple[str, str]]]]:
    """Runs of equal due time, each as a set, in the order they left."""
    groups: list[tuple[float, set[tuple[str, str]]]] = []
    for pair in popped:
        if not groups or dues[pair] != groups[-1][0]:
            groups.append((dues[pair], set()))
        groups[-1][1].add(pair)
    return groups


def next_due(q: DueQueue | OldQueue) -> float | None:
    """The earliest live due time (the new queue may also name an earlier horizon move)."""
    if isinstance(q, OldQueue):
        live = [due for due, seq, d, k in q.heap if q.live.get((d, k)) == seq]
        return min(live, default=None)
    return min(q.items().values(), default=None)


# --- the scheduler's start-up ------------------------------------------------------------------


def _config(tmp_path: Path, names: list[str], **rdap: object) -> Config:
    return Config(
        rdap=RdapSettings(bootstrap=str(tmp_path / "none.json"), **rdap),  # type: ignore[arg-type]
        domains=tuple(DomainConfig(n) for n in names),
    )


def test_restored_checks_are_first_due_when_their_saved_time_says(tmp_path: Path) -> None:
    """One pass over every domain at start-up gives each check the due time that the
    per-domain path (a reload's new domains) gives it: mono + min(max(next_due - now, 0),
    interval)."""
    names = [f"d{i}.example" for i in range(60)]
    wall, mono = 1_700_000_000.0, 5000.0
    rnd = random.Random(1)

    async def scenario() -> None:
        _m, store, client, scheduler = cli._wire(_config(tmp_path, names), CollectorRegistry())
        scheduler._clock = lambda: wall
        scheduler._mono = lambda: mono
        try:
            for name in names:
                checks = {}
                for kind in scheduler.checks:
                    pick = rnd.random()
                    if pick < 0.2:
                        continue  # never ran: due at once
                    next_due = (
                        None
                        if pick < 0.3
                        else wall - rnd.uniform(0, 1e5)  # overdue: at once
                        if pick < 0.5
                        else wall + rnd.uniform(0, 1e3)  # soon
                        if pick < 0.8
                        else wall + 1e7  # past its interval (a clock step): capped
                    )
                    checks[kind] = CheckState(success=True, last_success=wall, next_due=next_due)
                store.update(name, lambda s, c=checks: replace(s, checks=c))
            expected = {}
            for name in names:
                status = store.get(name)
                assert status is not None
                for kind, check in scheduler.checks.items():
                    next_due = status.check(kind).next_due
                    delay = next_due - wall if next_due is not None else 0.0
                    expected[(name, kind)] = mono + min(max(delay, 0.0), check.interval())
            scheduler._schedule_missing()  # start-up: every domain in one pass
            assert scheduler._scheduled == expected
            # Those due at once leave first, in config order, each domain's checks in order.
            kinds = list(scheduler.checks)
            at_once = [(d, k) for d in names for k in kinds if expected[(d, k)] == mono]
            assert len(at_once) > 20
            assert scheduler._queue.pop_due(mono) == at_once
            # The per-domain path (a reload's new domains) agrees, to the bit.
            for name in names[:5]:
                scheduler._queue.forget(name)
            scheduler._schedule_missing(names[:5])
            mine = {p: due for p, due in scheduler._scheduled.items() if p[0] in names[:5]}
            assert mine == {p: due for p, due in expected.items() if p[0] in names[:5]}
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_probe_target_does_not_restart_checks_in_flight(tmp_path: Path) -> None:
    """add_transient schedules the new domain only: a check that is running has no entry
    until it ends, and scheduling 'every domain without one' started it a second time."""
    names = ["a.example", "b.example"]

    async def scenario() -> None:
        _m, _store, client, scheduler = cli._wire(_config(tmp_path, names), CollectorRegistry())
        try:
            scheduler._schedule_missing()
            scheduler.ready = True
            in_flight = scheduler._queue.pop_due(scheduler._mono() + 1.0)
            assert ("a.example", "dns") in in_flight
            scheduler.add_transient(DomainConfig("probe.example"))
            assert not scheduler._queue.scheduled("a.example", "dns")
            assert {k for d, k in scheduler._scheduled if d == "probe.example"} == set(
                scheduler.checks
            )
            scheduler.drop_transient("probe.example")
            assert not any(d == "probe.example" for d, _k in scheduler._scheduled)
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_lanes_and_servers_looked_up_per_parent_equal_the_per_domain_answers(
    tmp_path: Path,
) -> None:
    names = [
        "a.example",
        "b.example",
        "x.co.uk",
        "y.uk",
        "z.sub.co.uk",
        "q.ch",
        "r.li",
        "s.de",
        "t.test",
        "bare",
    ]
    rdap = {"servers": {"co.uk": "https://co-uk.rdap.test/", "test": "http://plain.test/"}}
    config = replace(
        _config(tmp_path, names, **rdap),
        whois=WhoisSettings(servers={"uk": "whois.uk.test:4343", "example": "whois.example"}),
    )

    async def scenario() -> None:
        _m, _store, client, scheduler = cli._wire(config, CollectorRegistry())
        try:
            registration = scheduler.checks["rdap"]
            whois = scheduler.checks["whois"]
            assert isinstance(registration, RegistrationCheck)
            assert isinstance(whois, WhoisCheck)
            assert registration._servers(names) == {n: client.server_key(n) for n in names}
            assert len(set(registration._servers(names).values())) > 2
            lanes = {n: whois.lane(n)[0] for n in names}
            for name in names:
                server = scheduler.whois.server_for(name)
                assert lanes[name] == "whois:" + (server.label if server else "")
            # A reload that changes whois.servers changes the lanes.
            changed = replace(config, whois=WhoisSettings(servers={"uk": "other.uk.test"}))
            await scheduler.apply_config(changed)
            assert whois.lane("y.uk")[0] != lanes["y.uk"]
            server = scheduler.whois.server_for("y.uk")
            assert server is not None and whois.lane("y.uk")[0] == "whois:" + server.label
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_key_is_ceiling_milliseconds() -> None:
    # Rounding up is what keeps "nothing before its time" cheap to check at the heap's top.
    q = DueQueue(KINDS, origin=0.0)
    q.push(0.0014, "a.example", "rdap")
    assert q._heap[0] >> q._bits == math.ceil(1.4)
