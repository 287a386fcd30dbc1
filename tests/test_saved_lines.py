"""Each record's /metrics lines are saved with it in the state database, and the first rendering
after a restart uses them instead of rendering every domain again (issue 9: 100k domains ready in
seconds). What must hold: the restored exposition is byte for byte what rendering would give, and
saved lines are never served when they could be wrong (other labels, another line format, a
record that changed or aged out, damaged bytes)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from exporter import store as store_module
from exporter.collector import EXPOSITION_FORMAT, DomainCollector, pack_exposition
from exporter.store import DomainStatus, StatusStore
from tests.test_store import FULL

NOW = 2000.0
FOREVER = {kind: 1e12 for kind in ("rdap", "whois", "dns", "dnssec", "email", "nsdomain")}


def _domains(n: int) -> list[DomainStatus]:
    """n domains with every kind of result, a few of them on hold."""
    out = []
    for i in range(n):
        reg = FULL.rdap.registration if FULL.rdap else None
        assert reg is not None and FULL.rdap is not None
        statuses = ("client hold",) if i % 7 == 0 else ("client transfer prohibited",)
        rdap = replace(FULL.rdap, registration=replace(reg, name=f"d{i}.test", statuses=statuses))
        out.append(replace(FULL, name=f"d{i}.test", labels={"team": f"t{i % 3}"}, rdap=rdap))
    return out


def _saved(tmp_path: Path, records: list[DomainStatus], *, with_lines: bool = True) -> Path:
    store = StatusStore()
    if with_lines:
        store.keep_expositions(pack_exposition, EXPOSITION_FORMAT)
    store.sync((s.name, s.labels, s.expected_nameservers) for s in records)
    for s in records:
        store.update(s.name, lambda _old, s=s: s)
    path = tmp_path / "state.db"
    store.save(path)
    return path


class Taken:
    """Wraps take_exposition: how many domains got saved lines back."""

    def __init__(self, store: StatusStore) -> None:
        self.store = store
        self.given = 0

    def __call__(self, name: str) -> tuple[DomainStatus, bytes] | None:
        entry = self.store.take_exposition(name)
        self.given += entry is not None
        return entry


def _restart(
    path: Path,
    records: list[DomainStatus],
    *,
    labels: Callable[[DomainStatus], dict[str, str]] = lambda s: dict(s.labels),
    fmt: str = EXPOSITION_FORMAT,
    max_age: dict[str, float] | None = None,
) -> tuple[StatusStore, Taken]:
    store = StatusStore()
    store.keep_expositions(pack_exposition, fmt)
    store.sync((s.name, labels(s), s.expected_nameservers) for s in records)
    store.load(path, max_age=FOREVER if max_age is None else max_age, now=NOW)
    return store, Taken(store)


def _first_exposition(store: StatusStore, taken: Taken | None) -> bytes:
    if taken is None:
        return DomainCollector(store, clock=lambda: NOW).exposition()
    collector = DomainCollector(
        store, clock=lambda: NOW, restored=taken, restored_done=store.forget_expositions
    )
    return collector.exposition()


def test_restart_serves_saved_lines_byte_for_byte(tmp_path: Path) -> None:
    records = _domains(300)
    path = _saved(tmp_path, records)
    store, taken = _restart(path, records)
    restored = _first_exposition(store, taken)
    assert taken.given == 300  # every domain came back with its lines
    assert restored == _first_exposition(store, None)  # ...and they are what rendering gives
    assert b'domain_hold{domain="d0.test",team="t0"} 1.0' in restored
    assert store._restored_lines == {}  # dropped after the first rendering


def test_lines_of_other_labels_are_not_served(tmp_path: Path) -> None:
    records = _domains(20)
    path = _saved(tmp_path, records)
    store, taken = _restart(path, records, labels=lambda s: {"team": "renamed"})
    text = _first_exposition(store, taken)
    assert taken.given == 0
    assert b'team="t1"' not in text and b'team="renamed"' in text
    assert text == _first_exposition(store, None)


def test_lines_of_another_format_are_not_served(tmp_path: Path) -> None:
    records = _domains(20)
    path = _saved(tmp_path, records)
    store, taken = _restart(path, records, fmt="0" * len(EXPOSITION_FORMAT))
    assert _first_exposition(store, taken) == _first_exposition(store, None)
    assert taken.given == 0


def test_a_record_that_changed_after_the_restore_is_rendered_anew(tmp_path: Path) -> None:
    records = _domains(20)
    path = _saved(tmp_path, records)
    store, taken = _restart(path, records)

    def lift_hold(s: DomainStatus) -> DomainStatus:
        assert s.rdap is not None and s.rdap.registration is not None
        reg = replace(s.rdap.registration, statuses=("ok",))
        return replace(s, rdap=replace(s.rdap, registration=reg))

    store.update("d0.test", lift_hold)
    text = _first_exposition(store, taken)
    assert b'domain_hold{domain="d0.test",team="t0"} 0.0' in text
    assert b'domain_hold{domain="d0.test",team="t0"} 1.0' not in text
    assert text == _first_exposition(store, None)


def test_a_result_that_aged_out_is_not_served_from_saved_lines(tmp_path: Path) -> None:
    records = _domains(10)
    path = _saved(tmp_path, records)
    # The DNS result was measured at 1500: older than 100 s at NOW, so it is dropped on load.
    store, taken = _restart(path, records, max_age={**FOREVER, "dns": 100.0})
    text = _first_exposition(store, taken)
    assert b"\ndomain_nameserver_mismatch{" not in text  # the saved lines had it
    assert text == _first_exposition(store, None)


def test_damaged_lines_cost_the_lines_only(tmp_path: Path) -> None:
    records = _domains(10)
    path = _saved(tmp_path, records)
    with sqlite3.connect(path) as db:
        for name, data in db.execute("SELECT name, data FROM domains").fetchall():
            record, _mark, lines = bytes(data).partition(b"\n")
            assert lines  # saved with lines
            damaged = lines[: len(lines) // 2] + b"\xff garbage"
            row = record + b"\n" + damaged
            db.execute("UPDATE domains SET data = ? WHERE name = ?", (row, name))
    db.close()
    store, taken = _restart(path, records)
    assert len(store.snapshot()) == 10 and all(s.rdap is not None for s in store.snapshot())
    assert _first_exposition(store, taken) == _first_exposition(store, None)


def test_a_database_without_lines_restores_as_before(tmp_path: Path) -> None:
    records = _domains(10)
    path = _saved(tmp_path, records, with_lines=False)
    store, taken = _restart(path, records)
    assert all(s.rdap is not None for s in store.snapshot())
    assert _first_exposition(store, taken) == _first_exposition(store, None)
    assert taken.given == 0


@pytest.mark.parametrize("value", ["a\x00b", "plain"])
def test_a_nul_in_a_label_value_saves_no_lines(tmp_path: Path, value: str) -> None:
    records = [replace(_domains(1)[0], labels={"team": value})]
    path = _saved(tmp_path, records)
    store, taken = _restart(path, records)
    text = _first_exposition(store, taken)
    assert taken.given == (0 if "\x00" in value else 1)
    assert text == _first_exposition(store, None)


def test_a_rendering_bug_never_costs_the_save(tmp_path: Path) -> None:
    def broken(_s: DomainStatus) -> bytes | None:
        raise RuntimeError("boom")

    store = StatusStore()
    store.keep_expositions(broken, EXPOSITION_FORMAT)
    records = _domains(3)
    store.sync((s.name, s.labels, s.expected_nameservers) for s in records)
    for s in records:
        store.update(s.name, lambda _old, s=s: s)
    path = tmp_path / "state.db"
    assert store.save(path) == 3
    again, _taken = _restart(path, records)
    assert all(s.rdap is not None for s in again.snapshot())
    assert again._restored_lines == {}


def test_the_row_format_keeps_the_record_first() -> None:
    # Older readers and tools see the record's JSON up to the first newline, which compact
    # JSON never contains.
    row = store_module._encode_row(FULL, pack_exposition, EXPOSITION_FORMAT.encode())
    record, mark, lines = row.partition(b"\n")
    assert mark and record.startswith(b"{") and record.endswith(b"}")
    assert lines.startswith(EXPOSITION_FORMAT.encode())
