"""Fault matrix, state file part (issues 8, 9): hostile state files and kill -9 during saves.

Exporter cells start the real `python -m exporter --state.file ...` on a prepared state directory
and assert: it becomes ready, a scrape answers in under 1 s, memory stays bounded, the log has one
warning line and no traceback, good records are restored and bad ones are not, and a file that
is unusable as a whole is moved aside byte for byte (PATH.corrupt-<time>), never deleted.

The kill -9 cells run a saver subprocess and SIGKILL it at random moments, most of them inside a
save's transaction: afterwards the database opens, passes SQLite's integrity check and holds one
complete generation (older or newer, never a mix, never older than a save that returned), and
nothing but the database and its -wal/-shm is left. The same for the one-time conversion of a
legacy JSON file: the JSON file or the complete database, and the next start cleans up.

Nothing listens on 127.92.0.1:9 (this helper's range): RDAP and DNS checks fail fast there.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter import statefile
from exporter.registration import Registration
from exporter.store import CheckState, DomainStatus, RdapResult, StatusStore
from tests.faults.report import record, rss_mb
from tests.support.exporter_proc import REPO_ROOT, ExporterProcess, _child_env

DEAD = "127.92.0.1:9"
RSS_LIMIT_MB = 300.0
SCRAPE_LIMIT = 1.0


def _config(tmp: Path) -> Path:
    (tmp / "bootstrap.json").write_text(
        json.dumps(
            {
                "version": "1.0",
                "publication": "2026-11-01T00:00:00Z",
                "services": [[["test"], [f"https://{DEAD}/"]]],
            }
        )
    )
    config = tmp / "config.yaml"
    config.write_text(
        f"""
rdap:
  bootstrap: {tmp / "bootstrap.json"}
  allow_private_addresses: true
  interval: 1h
  timeout: 1s
dns:
  root_servers: ["{DEAD}"]
  interval: 1h
  timeout: 0.2s
domains: [good.test, bad.test]
"""
    )
    return config


def _held(name: str) -> DomainStatus:
    now = time.time()
    return DomainStatus(
        name=name,
        rdap=RdapResult(
            registered=True,
            server=f"https://{DEAD}/",
            registration=Registration(
                name=name, expiry=datetime(2031, 1, 1, tzinfo=UTC), statuses=("client hold",)
            ),
            read_at=now - 60,
        ),
        checks={
            "rdap": CheckState(
                success=True, last_attempt=now - 60, last_success=now - 60, next_due=now + 3600
            )
        },
    )


def _good_store() -> StatusStore:
    store = StatusStore()
    store.sync([("good.test", {}, ()), ("bad.test", {}, ())])
    for name in ("good.test", "bad.test"):
        store.update(name, lambda _old, n=name: _held(n))
    return store


def _good_state(path: Path) -> None:
    _good_store().save(path)


def _edit_bad(path: Path, edit: Callable[[str], str]) -> None:
    """Rewrite bad.test's record (its JSON text) inside the database."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (data,) = conn.execute("SELECT data FROM domains WHERE name = 'bad.test'").fetchone()
        conn.execute(
            "UPDATE domains SET data = ? WHERE name = 'bad.test'", (edit(data.decode()).encode(),)
        )
        conn.commit()


def _legacy_document() -> dict[str, object]:
    """The state as the JSON-file versions of the exporter wrote it."""
    return {
        "version": 2,
        "domains": {
            s.name: {
                k: statefile.dump(v)
                for k, v in ((f.name, getattr(s, f.name)) for f in fields(s))
                if k not in ("name", "labels", "expected_nameservers")
            }
            for s in _good_store().snapshot()
        },
    }


def _legacy(path: Path) -> None:
    path.write_text(json.dumps(_legacy_document()))


def _legacy_wrong_type(path: Path) -> None:
    document: dict[str, object] = _legacy_document()
    document["domains"]["bad.test"]["rdap"]["registration"]["statuses"] = {"x": 1}  # type: ignore[index]
    path.write_text(json.dumps(document))


def _legacy_huge_number(path: Path) -> None:
    document: dict[str, object] = _legacy_document()
    document["domains"]["bad.test"]["checks"]["rdap"]["failures"] = "@@"  # type: ignore[index]
    path.write_text(json.dumps(document).replace('"@@"', "9" * 5000))


def _deep(path: Path) -> None:
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)


def _deep_object(path: Path) -> None:
    path.write_bytes(b'{"version": 2, "domains": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(8).randbytes(1_000_000))


def _huge_number(path: Path) -> None:
    _good_state(path)
    _edit_bad(path, lambda text: text.replace('"failures":0', '"failures":' + "9" * 5000, 1))


def _wrong_type(path: Path) -> None:
    _good_state(path)
    _edit_bad(path, lambda text: text.replace('"statuses":["client hold"]', '"statuses":{"x":1}'))


def _truncated(path: Path) -> None:
    _good_state(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # a few pages, then cut
        conn.executemany(
            "INSERT INTO domains VALUES (?, ?, 0)", [(f"x{i}.test", b"{}" * 900) for i in range(40)]
        )
        conn.commit()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE dashboard (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO dashboard (body) VALUES ('someone else''s data')")
        conn.commit()


def _stale_temps(path: Path) -> None:
    _good_state(path)
    partial = path.read_bytes()[: path.stat().st_size // 2]
    for i in range(20):  # what kills during JSON-era saves left behind, one of them large
        (path.parent / f".domainwatch-{i:08x}.tmp").write_bytes(partial)
    (path.parent / ".domainwatch-big.tmp").write_bytes(b"{" * 50_000_000)
    # ...and a conversion from JSON cut short.
    (path.parent / f"{path.name}.tmp-sqlite").write_bytes(partial)


@dataclass(frozen=True)
class Cell:
    prepare: Callable[[Path], None]
    good_restored: bool  # good.test's hold comes back from the file
    bad_restored: bool
    warning: str | None  # the one warning line's text, if any
    moved_aside: bool = False  # the file, unusable as a whole, is kept as PATH.corrupt-*


UNREADABLE = "ignoring unreadable state file"
ONE_BAD = "ignoring saved state of 1 domains"
CELLS = {
    "deep_json_100k": Cell(_deep, False, False, UNREADABLE, moved_aside=True),
    "deep_json_in_an_object": Cell(_deep_object, False, False, UNREADABLE, moved_aside=True),
    "garbage_1mb": Cell(_garbage, False, False, UNREADABLE, moved_aside=True),
    "json_number_5000_digits": Cell(_legacy_huge_number, False, False, UNREADABLE, True),
    "legacy_json_converted": Cell(_legacy, True, True, None),
    "legacy_json_wrong_type_one_domain": Cell(_legacy_wrong_type, True, False, ONE_BAD),
    "record_number_5000_digits": Cell(_huge_number, True, False, ONE_BAD),
    "wrong_type_one_domain": Cell(_wrong_type, True, False, ONE_BAD),
    "truncated_database": Cell(_truncated, False, False, UNREADABLE, moved_aside=True),
    "foreign_sqlite_database": Cell(_foreign, False, False, UNREADABLE, moved_aside=True),
    "stale_temp_files": Cell(_stale_temps, True, True, None),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_exporter_starts_on_a_hostile_state_file(tmp_path: Path, name: str) -> None:
    cell = CELLS[name]
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state = state_dir / "state.json"
    cell.prepare(state)
    original = state.read_bytes()
    config = _config(tmp_path)
    problems: list[str] = []
    started = time.monotonic()
    rss = None
    outcome = "not started"
    with ExporterProcess(config, tmp_path / "run", state_file=state) as exporter:
        ready = time.monotonic() - started
        t0 = time.monotonic()
        scrape = exporter.scrape()
        scrape_seconds = time.monotonic() - t0
        assert exporter.proc is not None
        rss = rss_mb(exporter.proc.pid)
        if scrape_seconds > SCRAPE_LIMIT:
            problems.append(f"scrape took {scrape_seconds:.2f}s")
        if rss > RSS_LIMIT_MB:
            problems.append(f"RSS {rss:.0f} MB")
        for domain, want in (("good.test", cell.good_restored), ("bad.test", cell.bad_restored)):
            hold = scrape.value("domain_hold", domain=domain)
            if hold != (1 if want else None):
                problems.append(f"{domain}: domain_hold {hold}, restored expected: {want}")
        others = sorted(p.name for p in state_dir.iterdir() if p.name != "state.json")
        moved = [n for n in others if n.startswith("state.json.corrupt-")]
        if [n for n in others if n not in moved]:
            problems.append(f"files left: {others[:3]}")
        if cell.moved_aside:
            if len(moved) != 1:
                problems.append(f"moved aside: {moved}, want one")
            elif (state_dir / moved[0]).read_bytes() != original:
                problems.append("the file moved aside is not the original")
        elif moved:
            problems.append(f"moved aside although usable: {moved}")
        log = exporter.log_path.read_text(errors="replace")
        outcome = f"ready in {ready:.2f}s, restored {'good' if cell.good_restored else 'none'}"
    if "Traceback" in log:
        problems.append("traceback in the log")
    warnings = [line for line in log.splitlines() if "state" in line and "warn" in line.lower()]
    if cell.warning is None:
        if warnings:
            problems.append(f"unexpected warnings: {warnings}")
    elif len(warnings) != 1 or cell.warning not in warnings[0]:
        problems.append(f"want one warning '{cell.warning}', got {warnings}")
    elif len(warnings[0]) > 500:
        problems.append(f"warning line of {len(warnings[0])} characters")
    # The shutdown save left a complete database with both domains at the path.
    restored = StatusStore()
    restored.sync([("good.test", {}, ()), ("bad.test", {}, ())])
    if restored.load(state) != 2:
        problems.append("the database saved at shutdown does not restore both domains")
    record(f"state.{name}", outcome, ready, rss, not problems)
    assert not problems, f"{name}: {problems}\n{log[-3000:]}"


# --- kill -9 during saves -------------------------------------------------------------------

SAVER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from exporter.registration import Registration
    from exporter.store import CheckState, RdapResult, StatusStore

    path, count, generation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    names = [f"d{i:05d}.example" for i in range(count)]
    store = StatusStore()
    store.sync((name, {}, ()) for name in names)
    registrations = {
        n: Registration(name=n, statuses=("active", "client transfer prohibited"),
                        nameservers=("ns1.example.net", "ns2.example.net"), registrar="R")
        for n in names
    }
    print("ready", flush=True)
    while True:
        generation += 1
        for name in names:
            store.update(name, lambda s, g=generation: replace(
                s,
                rdap=RdapResult(True, "https://x.test/", registrations[s.name], read_at=float(g)),
                checks={"rdap": CheckState(success=True, last_success=float(g), failures=g)},
            ))
        print("saving", generation, flush=True)
        store.save(path)  # every row changed: one large transaction
        print("saved", generation, flush=True)
    """
)
DOMAINS = 4000
KILLS = 20
DB_FILES = {"state.db", "state.db-wal", "state.db-shm"}


def _generation_on_disk(path: Path) -> int:
    """The one generation the database holds; fails if it is damaged, torn or mixed."""
    with contextlib.closing(sqlite3.connect(path)) as conn:  # recovers a WAL left by a kill
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        seen = [
            json.loads(data)["checks"]["rdap"]["failures"]
            for (data,) in conn.execute("SELECT data FROM domains")
        ]
    assert len(seen) == DOMAINS, f"incomplete state: {len(seen)} rows"
    assert len(set(seen)) == 1, f"mixed generations {sorted(set(seen))[:5]}"
    return int(seen[0])


def _lines_until(proc: subprocess.Popen[str], prefix: str) -> float:
    """Read the saver's output up to a line starting with `prefix`; the time it came."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"saver exited before {prefix!r}")
        if line.startswith(prefix):
            return time.monotonic()


def test_kill_9_during_saves_leaves_a_complete_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_dir / "state.db"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = random.Random(9)
    on_disk, mid_save, problems = 0, 0, []
    save_seconds = 0.3  # measured below, on the first round
    started = time.monotonic()
    for round_no in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(DOMAINS), str(on_disk)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_child_env(),
            text=True,
        )  # fmt: skip
        _lines_until(proc, "ready")
        if round_no == 0:
            begun = _lines_until(proc, "saving")
            save_seconds = max(0.05, _lines_until(proc, "saved") - begun)
        # Most kills land inside a save (its transaction is most of it), a few between; in the
        # round's first save (a full one: every row deleted and written) or a later one.
        for _save in range(rng.randint(1, 3)):
            _lines_until(proc, "saving")
        time.sleep(rng.uniform(0.0, save_seconds * 1.2))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        lines = out.split("\n")
        last = [line for line in lines if line][-1:] or ["saving"]
        saved = [int(line.split()[1]) for line in lines if line.startswith("saved")]
        if last[0].startswith("saving"):
            mid_save += 1
        files = {p.name for p in state_dir.iterdir()}
        if not files <= DB_FILES:
            problems.append(f"round {round_no}: stray files {sorted(files - DB_FILES)}")
        if not path.exists():
            continue  # killed before its first save created the database
        try:
            generation = _generation_on_disk(path)
        except (AssertionError, sqlite3.Error) as exc:
            problems.append(f"round {round_no}: {exc}")
            break
        if saved and generation < saved[-1]:
            problems.append(f"saved generation {saved[-1]} lost (database has {generation})")
        if generation < on_disk:
            problems.append(f"went back from {on_disk} to {generation}")
        on_disk = generation

    # The next start restores the last complete state.
    store = StatusStore()
    store.sync((f"d{i:05d}.example", {}, ()) for i in range(DOMAINS))
    assert store.load(path) == DOMAINS
    assert {s.check("rdap").failures for s in store.snapshot()} == {on_disk}
    assert {p.name for p in state_dir.iterdir()} == {"state.db"}
    seconds = time.monotonic() - started
    outcome = f"{KILLS} kills, {mid_save} mid-save, last generation {on_disk}"
    record("state.kill9_during_saves", outcome, seconds, None, not problems and on_disk > 0)
    assert on_disk > 0, "no save ever completed: the test did not exercise anything"
    assert mid_save >= KILLS // 2, f"only {mid_save} kills landed inside a save"
    assert not problems, problems


CONVERTER = textwrap.dedent(
    """
    import sys
    from exporter.store import StatusStore

    store = StatusStore()
    store.sync((f"d{i:05d}.example", {}, ()) for i in range(int(sys.argv[2])))
    print("converting", flush=True)
    store.load(sys.argv[1])
    print("converted", flush=True)
    """
)
LEGACY_DOMAINS = 6000


def test_kill_9_during_the_json_conversion(tmp_path: Path) -> None:
    """Either the JSON file, untouched, or the complete database; the next start cleans up."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_dir / "state.json"
    names = [f"d{i:05d}.example" for i in range(LEGACY_DOMAINS)]
    record_ = _legacy_document()["domains"]["good.test"]  # type: ignore[index]
    legacy = json.dumps({"version": 2, "domains": dict.fromkeys(names, record_)}).encode()
    script = tmp_path / "converter.py"
    script.write_text(CONVERTER)
    rng = random.Random(10)
    outcomes = {"json": 0, "database": 0}
    started = time.monotonic()
    for _round in range(6):
        for leftover in state_dir.iterdir():
            leftover.unlink()
        path.write_bytes(legacy)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(LEGACY_DOMAINS)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_child_env(),
            text=True,
        )  # fmt: skip
        _lines_until(proc, "converting")
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        files = {p.name for p in state_dir.iterdir()}
        assert files <= {"state.json"} | {f"state.json.tmp-sqlite{s}" for s in ("", "-journal")}
        if path.read_bytes() == legacy:
            outcomes["json"] += 1
        else:
            outcomes["database"] += 1
            with contextlib.closing(sqlite3.connect(path)) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert conn.execute("SELECT count(*) FROM domains").fetchone() == (len(names),)
        store = StatusStore()
        store.sync((name, {}, ()) for name in names)
        assert store.load(path) == len(names)
        assert {p.name for p in state_dir.iterdir()} == {"state.json"}
    outcome = f"6 kills: {outcomes['json']} left the JSON file, {outcomes['database']} the database"
    record("state.kill9_during_conversion", outcome, time.monotonic() - started, None, True)
