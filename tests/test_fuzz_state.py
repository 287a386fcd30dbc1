"""Property tests for the state file (issues 8, 9): loading never raises for any bytes, any legacy
JSON file or any damaged database, what it restores is always well-typed (it saves again), and
save -> load gives back every persisted field of any generated status, except what must never
reach the disk (contact addresses).

The status generator is built from the dataclasses' own type hints, so a field the lead adds to
RdapResult, DnsResult, CheckState, Registration or ContactVerdict is generated, saved and
compared here without touching this file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sqlite3
import tempfile
import types
import typing
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.store import CHECKS, CheckState, DomainStatus, StatusStore

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Examples that convert a legacy file or write a database each (fsyncs on a real disk).
FUZZ_WRITES = settings(FUZZ, max_examples=80)
NAMES = ("a.example", "b.example", "c.example")
_CHECK = CheckState(success=True, last_attempt=1e9, last_success=1e9, failures=2)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # In memory where there is a tmpfs: every example converts or writes a database, and its
    # fsyncs (durability is not what these tests are about) would dominate on a shared disk.
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="fuzz-state-", dir=where) as tmp:
        yield Path(tmp)


def _fresh_store() -> StatusStore:
    store = StatusStore()
    store.sync((name, {}, ()) for name in NAMES)
    return store


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _load_never_raises(path: Path, data: bytes | None = None) -> StatusStore:
    """Load PATH (after writing `data` to it, if given) and check the promises."""
    if data is not None:
        path.write_bytes(data)
    store = _fresh_store()
    handler = _Lines()
    logger = logging.getLogger("exporter.store")
    logger.addHandler(handler)
    try:
        restored = store.load(path, max_age={"rdap": 3600.0, "dns": 600.0}, now=1e9)
    finally:
        logger.removeHandler(handler)
    assert isinstance(restored, int) and 0 <= restored <= len(NAMES)
    # At most one warning, one short line, whatever the file held.
    assert len(handler.lines) <= 1, handler.lines
    for line in handler.lines:
        assert len(line.splitlines()) == 1 and len(line) < 600, line[:600]
    # Whatever was restored is well-typed: it saves again and reads back the same.
    again = path.with_suffix(".again")
    store.save(again)
    copy = _fresh_store()
    assert copy.load(again) == len(NAMES)
    assert copy.snapshot() == store.snapshot()
    for moved in path.parent.glob(f"{path.name}.corrupt-*"):
        moved.unlink()  # kept for the user; here they would only pile up
    return store


def _on_disk(path: Path) -> bytes:
    """Every byte the database left on disk (the file, and a WAL if one remained)."""
    return b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))


def _record(path: Path, name: str) -> Any:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (data,) = conn.execute("SELECT data FROM domains WHERE name = ?", (name,)).fetchone()
    return json.loads(data)


def _put_record(path: Path, name: str, data: bytes) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE domains SET data = ? WHERE name = ?", (data, name))
        conn.commit()


# --- any input ----------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # NaN and infinities too: Python's json writes and reads them
        st.text(max_size=20),
        st.sampled_from(["2030-01-01T00:00:00+00:00", "client hold", "rdap", "dns", "email"]),
        st.sampled_from([10**400, -(10**400), 2**63, 2**1024, 1.7976931348623157e308]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "checks", "rdap", "dns", "email", "registration", "verdicts", "success",
                        "last_success", "next_due", "registered", "statuses", "contacts", "lame",
                        "parent", "name", "expiry", "role", "kind", "email", "version", "domains",
                    ]
                ),
                st.text(max_size=8),
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=30,
)  # fmt: skip


@FUZZ
@given(document=json_values)
def test_any_json_document(workdir: Path, document: object) -> None:
    _load_never_raises(workdir / "doc.json", json.dumps(document).encode())


@FUZZ_WRITES
@given(records=st.dictionaries(st.sampled_from(NAMES), json_values, max_size=3))
def test_any_json_records_in_a_valid_envelope(workdir: Path, records: dict[str, Any]) -> None:
    for version in (1, 2):
        document = {"version": version, "domains": records}
        _load_never_raises(workdir / "env.json", json.dumps(document).encode())


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes(workdir: Path, data: bytes) -> None:
    _load_never_raises(workdir / "bytes.json", data)


@FUZZ
@given(
    damage=st.lists(
        st.tuples(st.integers(min_value=0, max_value=40_000), st.integers(1, 255)), max_size=20
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=40_000)),
)
def test_any_damage_to_a_database(
    workdir: Path, damage: list[tuple[int, int]], cut: int | None
) -> None:
    """A real database with bytes flipped anywhere (header, schema, b-tree pages, records)
    and/or cut short: typed handling, whatever SQLite makes of it."""
    path = workdir / "damaged.db"
    path.unlink(missing_ok=True)
    source = _fresh_store()
    for name in NAMES:
        source.update(name, lambda s: dataclasses.replace(s, checks={"rdap": _CHECK}))
    source.save(path)
    data = bytearray(path.read_bytes())
    for offset, xor in damage:
        if offset < len(data):
            data[offset] ^= xor
    _load_never_raises(path, bytes(data[:cut]))


@FUZZ
@given(record=json_values)
def test_any_json_record_in_a_database(workdir: Path, record: object) -> None:
    path = workdir / "records.db"
    path.unlink(missing_ok=True)
    _fresh_store().save(path)
    _put_record(path, NAMES[0], json.dumps(record).encode())
    _load_never_raises(path)


# --- generated statuses -------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    """A strategy for any type the state codec supports, from the type hint alone."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of(*(strategy_for(a) for a in args))
    if origin is typing.Literal:
        return st.sampled_from(args)
    if hint is type(None):
        return st.none()
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if origin in (list, set, frozenset):
        return st.lists(strategy_for(args[0]), max_size=3).map(origin)
    if origin in (dict, Mapping):
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=-(2**63), max_value=2**63)
    if hint is float:
        return finite
    if hint is str:
        return st.text(max_size=12)
    if hint is datetime:
        return aware
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(hint) if f.init}
        return st.builds(hint, **fields)
    raise NotImplementedError(f"no strategy for {hint!r}: teach tests/test_fuzz_state.py")


def _persisted(status: DomainStatus) -> DomainStatus:
    """What a save keeps: config-owned fields come from the store; repr=False fields (contact
    addresses) are dropped; only known check kinds."""
    return dataclasses.replace(
        _strip_private(status),
        labels={},
        expected_nameservers=(),
        checks={k: v for k, v in status.checks.items() if k in CHECKS},
    )


def _strip_private(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            current = getattr(value, f.name)
            if not f.repr:
                changes[f.name] = (
                    f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                )
            else:
                stripped = _strip_private(current)
                if stripped is not current:
                    changes[f.name] = stripped
        return dataclasses.replace(value, **changes) if changes else value
    if isinstance(value, tuple):
        items = tuple(_strip_private(v) for v in value)
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, Mapping):
        stripped_map = {k: _strip_private(v) for k, v in value.items()}
        changed = any(stripped_map[k] is not v for k, v in value.items())
        return stripped_map if changed else value
    return value


statuses = st.builds(
    lambda status, name: dataclasses.replace(status, name=name),
    strategy_for(DomainStatus),
    st.sampled_from(NAMES),
)


def _with_marked_addresses(status: DomainStatus, marker: str) -> DomainStatus:
    """Give every contact a distinctive address, so the file can be searched for it."""
    reg = status.rdap.registration if status.rdap else None
    if status.rdap is None or reg is None:
        return status
    contacts = tuple(
        dataclasses.replace(c, email=f"{marker}{i}@mailbox.invalid")
        for i, c in enumerate(reg.contacts)
    )
    registration = dataclasses.replace(reg, contacts=contacts)
    return dataclasses.replace(
        status, rdap=dataclasses.replace(status.rdap, registration=registration)
    )


@FUZZ_WRITES
@given(generated=st.lists(statuses, max_size=3, unique_by=lambda s: s.name))
def test_save_load_round_trip(workdir: Path, generated: list[DomainStatus]) -> None:
    generated = [_with_marked_addresses(s, "private-") for s in generated]
    source = _fresh_store()
    for status in generated:
        source.update(status.name, lambda _old, s=status: s)
    path = workdir / "round.db"
    path.unlink(missing_ok=True)
    source.save(path)
    assert b"private-" not in _on_disk(path)  # no contact address on disk

    restored = _fresh_store()
    assert restored.load(path) == len(NAMES)
    for status in generated:
        assert restored.get(status.name) == _persisted(status)


@FUZZ_WRITES
@given(
    status=statuses,
    ages=st.fixed_dictionaries(
        {kind: st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e7)) for kind in CHECKS}
    ),
    dues=st.fixed_dictionaries(
        {kind: st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e7)) for kind in CHECKS}
    ),
)
def test_age_limit_drops_exactly_the_stale_results(
    workdir: Path,
    status: DomainStatus,
    ages: dict[str, float | None],
    dues: dict[str, float | None],
) -> None:
    now, limit = 2e9, 7200.0
    checks = {
        kind: dataclasses.replace(
            status.check(kind),
            last_success=None if age is None else now - age,
            next_due=None if dues[kind] is None else now + dues[kind],
        )
        for kind, age in ages.items()
    }
    status = dataclasses.replace(status, checks=checks)
    source = _fresh_store()
    source.update(status.name, lambda _old: status)
    path = workdir / "aged.db"
    source.save(path)
    restored = _fresh_store()
    restored.load(path, max_age=dict.fromkeys(CHECKS, limit), now=now)
    got = restored.get(status.name)
    assert got is not None

    def fresh(kind: str) -> bool:
        age = ages.get(kind)
        return age is not None and math.fabs(age) <= limit

    persisted = _persisted(status)

    def result(kind: str) -> object:
        """The result check `kind` produced: RDAP and WHOIS share the `rdap` field."""
        if kind in ("rdap", "whois"):
            return persisted.rdap if persisted.rdap and persisted.rdap.source == kind else None
        return getattr(persisted, kind)

    for field in ("rdap", "dns", "email", "dnssec", "nsdomain"):
        value = getattr(persisted, field)
        producers = [k for k in CHECKS if value is not None and result(k) is value]
        expected = value if all(fresh(k) for k in producers) else None
        assert getattr(got, field) == expected, field
    for kind in ages:
        state = checks[kind]
        if fresh(kind):
            want = state
        elif ages[kind] is None and result(kind) is None:  # never succeeded: its schedule stays
            due = state.next_due
            want = state if due is None or due - now <= limit else (
                dataclasses.replace(state, next_due=now + limit))  # fmt: skip
        else:  # a result too old: re-checked at once
            want = dataclasses.replace(state, next_due=None)
        assert got.checks[kind] == want, kind


@FUZZ_WRITES
@given(status=statuses, data=st.data())
def test_a_valid_file_with_one_part_replaced(
    workdir: Path, status: DomainStatus, data: st.DataObject
) -> None:
    """Wrong types anywhere: a real record with one value, at any depth, swapped for any JSON."""
    source = _fresh_store()
    source.update(status.name, lambda _old: status)
    path = workdir / "mutated.db"
    path.unlink(missing_ok=True)
    source.save(path)
    legacy = data.draw(st.booleans())  # the same damage in a JSON file being converted
    record = _record(path, status.name)
    document: Any = {"version": 2, "domains": {status.name: record}} if legacy else record
    node: Any = document
    while True:
        children = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not children:
            break
        key = data.draw(st.sampled_from(children))
        child = node[key]
        if not isinstance(child, dict | list) or data.draw(st.booleans()):
            node[key] = data.draw(json_values)
            break
        node = child
    if legacy:
        _load_never_raises(path, json.dumps(document).encode())
    else:
        _put_record(path, status.name, json.dumps(document).encode())
        _load_never_raises(path)
