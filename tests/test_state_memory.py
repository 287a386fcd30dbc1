"""Restoring the state is small and shares only what really repeats (issue 9): at 100k domains
the restored records cost ~1.4 KB each instead of ~7 KB, because equal text, tuples of text,
small mappings and records without timestamps are one object across domains, and the records
keep their fields in slots. Sharing must never turn one value into another (True == 1), the
load's sharing memo stays bounded whatever the file holds, and the fast ways of building
records (exporter/statefile.py) give exactly what __init__ and dataclasses.replace give."""

from __future__ import annotations

import dataclasses
import gc
import json
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter import statefile
from exporter.registration import ContactEmail, Registration
from exporter.store import (
    CHECKS,
    ChangeLog,
    CheckState,
    ContactVerdict,
    DnsResult,
    DnssecResult,
    DomainStatus,
    EmailResult,
    NsDomainResult,
    NsDomainVerdict,
    RdapResult,
    StatusStore,
)

NS = ("ns1.dns.example", "ns2.dns.example")
NOW = 1_800_000_000.0


def _status(i: int) -> DomainStatus:
    """A fully populated domain as the checks leave it; its checks ran at times of its own
    (no two domains share a timestamp, as in a real state)."""
    name = f"d{i:05d}.example"
    ran = NOW - (i % 3600) - i * 1e-4
    ok = CheckState(success=True, last_attempt=ran, last_success=ran, next_due=ran + 3600)
    return DomainStatus(
        name=name,
        rdap=RdapResult(
            registered=True,
            server="https://rdap.example/",
            registration=Registration(
                name=name,
                expiry=datetime.fromtimestamp(ran, UTC) + timedelta(days=30 + i % 300),
                statuses=("client delete prohibited", "client transfer prohibited"),
                nameservers=NS,
                registrar="Example Registrar, Inc.",
                registrar_iana_id="9999",
                contacts=(ContactEmail("registrant", "real"), ContactEmail("technical", "real")),
            ),
            read_at=ran,
        ),
        dns=DnsResult(
            parent_zone="example",
            parent=NS,
            child=NS,
            delegated=True,
            lame=dict.fromkeys(NS),
            mismatch=False,
            inconsistent=False,
            measured_at=ran,
        ),
        email=EmailResult(
            tuple(
                ContactVerdict(role, "rdap", "mail.example", True, "mx_ok", False)
                for role in ("registrant", "technical")
            )
        ),
        checks={**dict.fromkeys(CHECKS, CheckState(next_due=ran + 3600)), "rdap": ok, "dns": ok},
        dnssec=DnssecResult(
            parent_zone="example",
            signed=False,
            serial_drift=0,
            glue_mismatch={"ns1.dns.example": True},
            measured_at=ran,
        ),
        nsdomain=NsDomainResult((NsDomainVerdict("dns.example", True, "ok"),)),
    )


def _saved(path: Path, statuses: list[DomainStatus]) -> None:
    store = StatusStore()
    store.sync((s.name, {}, ()) for s in statuses)
    for status in statuses:
        store.update(status.name, _replacing(status))
    store.save(path)


def _replacing(status: DomainStatus) -> Callable[[DomainStatus], DomainStatus]:
    return lambda _old: status


def _restored(path: Path, names: list[str]) -> StatusStore:
    store = StatusStore()
    store.sync((name, {}, ()) for name in names)
    assert store.load(path, now=NOW) == len(names)
    return store


def _edit(path: Path, name: str, old: str, new: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        (data,) = conn.execute("SELECT data FROM domains WHERE name = ?", (name,)).fetchone()
        assert old in data.decode()
        edited = data.decode().replace(old, new).encode()
        conn.execute("UPDATE domains SET data = ? WHERE name = ?", (edited, name))
        conn.commit()


def test_restored_records_share_what_repeats_and_only_that(tmp_path: Path) -> None:
    statuses = [_status(i) for i in range(3)]
    path = tmp_path / "state.db"
    _saved(path, statuses)
    store = _restored(path, [s.name for s in statuses])
    a, b, _c = (store.get(s.name) for s in statuses)
    assert a is not None and b is not None
    assert [store.get(s.name) for s in statuses] == statuses
    assert a.rdap and b.rdap and a.rdap.registration and b.rdap.registration
    ra, rb = a.rdap.registration, b.rdap.registration
    assert ra.statuses is rb.statuses and ra.registrar is rb.registrar
    assert ra.nameservers is rb.nameservers and ra.contacts is rb.contacts
    assert a.rdap.server is b.rdap.server
    assert a.dns and b.dns and a.dns.lame is b.dns.lame and a.dns.parent is b.dns.child
    assert a.dnssec and b.dnssec and a.dnssec.glue_mismatch is b.dnssec.glue_mismatch
    assert a.email is b.email and a.nsdomain is b.nsdomain and a.changes is b.changes
    assert a.checks["whois"] is not b.checks["whois"]  # next_due differs
    assert a.checks["rdap"] is not b.checks["rdap"] and a.dnssec is not b.dnssec
    assert ra.name is a.name  # the registration's name is the domain's own string
    assert not hasattr(a, "__dict__") and not hasattr(a.checks["rdap"], "__dict__")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"deliverable":true', '"deliverable":1'),  # a verdict seen before, with a number
        ('"self_hosted":false', '"self_hosted":0'),
        ('"failures":0', '"failures":false'),  # a check state that never ran
        ('"delegated":true', '"delegated":1.0'),
        ('"ns1.dns.example":null', '"ns1.dns.example":0'),  # a mapping seen before
        ('"ns1.dns.example":true', '"ns1.dns.example":1'),
    ],
)
def test_sharing_never_turns_a_number_into_a_flag(tmp_path: Path, old: str, new: str) -> None:
    statuses = [_status(i) for i in range(3)]
    path = tmp_path / "state.db"
    _saved(path, statuses)
    _edit(path, statuses[2].name, old, new)  # read after two equal, well-typed records
    store = StatusStore()
    store.sync((s.name, {}, ()) for s in statuses)
    assert store.load(path, now=NOW) == 2
    assert store.get(statuses[2].name) == DomainStatus(name=statuses[2].name)
    assert store.get(statuses[1].name) == statuses[1]


def test_the_sharing_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statefile, "SHARE_LIMIT", 100)
    decoder = statefile.Decoder()
    current = DomainStatus(name="x.example")
    largest = 0
    for i in range(300):  # 300 records of ten values never seen before
        registration = {"name": f"n{i}", "statuses": [f"s{i}-{j}" for j in range(8)]}
        rdap = {"registered": True, "server": f"https://{i}.example/", "source": f"src{i}"}
        record = {"rdap": {**rdap, "registration": registration}}
        raw = decoder.decode(json.dumps(record).encode())
        loaded = decoder.onto(current, raw, frozenset({"name"}))
        assert loaded.rdap is not None and loaded.rdap.server == f"https://{i}.example/"
        largest = max(largest, len(decoder.shared))
    assert 100 <= largest <= 100 + 20  # the limit, plus what one record added


def test_restored_records_are_small(tmp_path: Path) -> None:
    n = 1000
    statuses = [_status(i) for i in range(n)]
    path = tmp_path / "state.db"
    _saved(path, statuses)
    _restored(path, [s.name for s in statuses[:5]])  # the readers are built once, not counted
    store = StatusStore()
    store.sync((s.name, {}, ()) for s in statuses)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert store.load(path, now=NOW) == n
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.snapshot() == statuses
    # ~1.3 KB today (six check states, four results with timestamps, a registration, the
    # checks mapping); 7.4 KB before sharing and slots.
    assert kept / n < 1800, kept / n


def _records() -> Iterator[object]:
    status = _status(7)
    yield status
    yield status.checks["rdap"]
    yield status.rdap
    assert status.rdap is not None
    yield status.rdap.registration
    yield status.dns
    yield status.changes


@pytest.mark.parametrize("record", list(_records()), ids=lambda r: type(r).__name__)
def test_evolve_is_dataclasses_replace(record: object) -> None:
    assert dataclasses.is_dataclass(record) and not isinstance(record, type)
    first = dataclasses.fields(record)[0].name
    last = dataclasses.fields(record)[-1].name
    changes = {first: getattr(record, last), last: getattr(record, first)}
    evolved = statefile.evolve(record, **changes)
    assert type(evolved) is type(record)
    assert evolved == dataclasses.replace(record, **changes)
    assert statefile.evolve(record) == record and statefile.evolve(record) is not record
    with pytest.raises(TypeError):
        statefile.evolve(record, no_such_field=1)


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    low: int
    high: int = 10

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low above high")


@dataclasses.dataclass(frozen=True)
class _Plain:
    name: str
    changes: ChangeLog = dataclasses.field(default_factory=ChangeLog)


def test_records_that_validate_or_have_no_slots_are_built_by_init() -> None:
    assert statefile.load_dataclass(_Checked, {"low": 3}) == _Checked(3)
    with pytest.raises(statefile.StateError, match="low above high"):
        statefile.load_dataclass(_Checked, {"low": 30})
    plain = statefile.load_dataclass(_Plain, {"name": "a", "changes": {}})
    assert plain == _Plain("a") and plain.__dict__ == {"name": "a", "changes": ChangeLog()}
    assert statefile.evolve(plain, name="b") == _Plain("b")
    with pytest.raises(ValueError, match="low above high"):
        statefile.evolve(_Checked(3), low=30)
