"""Fault matrix, state file part (issue 8): hostile state files and kill -9 during saves.

Exporter cells start the real `python -m exporter --state.file ...` on a prepared state directory
and assert: it becomes ready, a scrape answers in under 1 s, memory stays bounded, the log has one
warning line and no traceback, good records are restored and bad ones are not. The kill -9 cell
runs a saver subprocess in a loop and SIGKILLs it at random moments: afterwards the file always
parses and holds one complete generation (older or newer), and the next start removes the
temp files the kills left.

Nothing listens on 127.83.0.1:9 (this helper's range): RDAP and DNS checks fail fast there.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.registration import Registration
from exporter.store import CheckState, DomainStatus, RdapResult, StatusStore
from tests.faults.report import record, rss_mb
from tests.support.exporter_proc import REPO_ROOT, ExporterProcess, _child_env

DEAD = "127.83.0.1:9"
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


def _good_state(path: Path) -> None:
    store = StatusStore()
    store.sync([("good.test", {}, ()), ("bad.test", {}, ())])
    for name in ("good.test", "bad.test"):
        store.update(name, lambda _old, n=name: _held(n))
    store.save(path)


def _deep(path: Path) -> None:
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(8).randbytes(1_000_000))


def _huge_number(path: Path) -> None:
    _good_state(path)
    document = json.loads(path.read_text())
    document["domains"]["bad.test"]["checks"]["rdap"]["failures"] = "@@"
    path.write_text(json.dumps(document).replace('"@@"', "9" * 5000))


def _wrong_type(path: Path) -> None:
    _good_state(path)
    document = json.loads(path.read_text())
    document["domains"]["bad.test"]["rdap"]["registration"]["statuses"] = {"client hold": 1}
    path.write_text(json.dumps(document))


def _stale_temps(path: Path) -> None:
    _good_state(path)
    partial = path.read_bytes()[: path.stat().st_size // 2]
    for i in range(20):  # what kills during saves leave behind, one of them large
        (path.parent / f".domainwatch-{i:08x}.tmp").write_bytes(partial)
    (path.parent / ".domainwatch-big.tmp").write_bytes(b"{" * 50_000_000)


@dataclass(frozen=True)
class Cell:
    prepare: Callable[[Path], None]
    good_restored: bool  # good.test's hold comes back from the file
    bad_restored: bool
    warning: str | None  # the one warning line's text, if any


CELLS = {
    "deep_json_100k": Cell(_deep, False, False, "ignoring unreadable state file"),
    "garbage_1mb": Cell(_garbage, False, False, "ignoring unreadable state file"),
    "number_5000_digits": Cell(_huge_number, False, False, "ignoring unreadable state file"),
    "wrong_type_one_domain": Cell(_wrong_type, True, False, "ignoring saved state of 1 domains"),
    "stale_temp_files": Cell(_stale_temps, True, True, None),
}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_exporter_starts_on_a_hostile_state_file(tmp_path: Path, name: str) -> None:
    cell = CELLS[name]
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state = state_dir / "state.json"
    cell.prepare(state)
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
        leftovers = sorted(p.name for p in state_dir.iterdir() if p.name != "state.json")
        if leftovers:
            problems.append(f"temp files left: {leftovers[:3]}")
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
    registrations = {n: Registration(name=n, statuses=("active",)) for n in names}
    print("ready", flush=True)
    while True:
        generation += 1
        for name in names:
            store.update(name, lambda s, g=generation: replace(
                s,
                rdap=RdapResult(True, "https://x.test/", registrations[s.name], read_at=float(g)),
                checks={"rdap": CheckState(success=True, last_success=float(g), failures=g)},
            ))
        store.save(path)
        print(generation, flush=True)
    """
)
DOMAINS = 2000
KILLS = 25


def _temp_files(folder: Path) -> set[str]:
    return {e.name for e in os.scandir(folder) if e.name.startswith(".domainwatch-")}


def _wait_for_temp_file(folder: Path, after: float, old: set[str]) -> None:
    """Return while a new save's temp file exists (the write/fsync window), `after` s on."""
    deadline = time.monotonic() + after + 3.0
    time.sleep(after)
    while time.monotonic() < deadline:
        if _temp_files(folder) - old:
            return
    # A machine too busy to catch the window: the kill still lands at some moment.


def _generation_on_disk(path: Path) -> int:
    """The one generation the file holds; fails if the file is torn or mixed."""
    document = json.loads(path.read_bytes())  # parses, whatever moment the kill hit
    seen = {d["checks"]["rdap"]["failures"] for d in document["domains"].values()}
    assert len(document["domains"]) == DOMAINS, "incomplete state"
    assert len(seen) == 1, f"mixed generations {sorted(seen)[:5]}"
    return int(seen.pop())


def test_kill_9_during_saves_leaves_a_complete_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    path = state_dir / "state.json"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = random.Random(9)
    on_disk, kills_with_temp, problems = 0, 0, []
    started = time.monotonic()
    for round_no in range(KILLS):
        temps_before = _temp_files(state_dir)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(DOMAINS), str(on_disk)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_child_env(),
            text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        if round_no % 2:
            time.sleep(rng.uniform(0.0, 0.4))  # a few saves in, at an arbitrary moment
        else:
            _wait_for_temp_file(state_dir, rng.uniform(0.0, 0.5), temps_before)  # mid-write
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        completed = [int(x) for x in out.split()]
        if _temp_files(state_dir) - temps_before:  # this kill cut a write short
            kills_with_temp += 1
        if not path.exists():
            continue  # killed before its first save finished
        generation = _generation_on_disk(path)
        if completed and generation < completed[-1]:
            problems.append(f"saved generation {completed[-1]} lost (file has {generation})")
        if generation < on_disk:
            problems.append(f"went back from {on_disk} to {generation}")
        on_disk = generation

    # The next start restores the last complete state and removes what the kills left.
    store = StatusStore()
    store.sync((f"d{i:05d}.example", {}, ()) for i in range(DOMAINS))
    assert store.load(path) == DOMAINS
    assert {s.check("rdap").failures for s in store.snapshot()} == {on_disk}
    leftovers = sorted(p.name for p in state_dir.iterdir())
    if leftovers != ["state.json"]:
        problems.append(f"left after start: {leftovers}")
    seconds = time.monotonic() - started
    outcome = f"{KILLS} kills, {kills_with_temp} mid-save, last generation {on_disk}"
    record("state.kill9_during_saves", outcome, seconds, None, not problems and on_disk > 0)
    assert on_disk > 0, "no save ever completed: the test did not exercise anything"
    assert not problems, problems
