"""Benchmark: the state file at N fully populated domains, the legacy JSON file beside the
SQLite state database, on the same data in the same run.

    python bench/state.py [--domains 100000] [--rounds 3] [--ready] [--code DIR]

Measures, for each format: save time (a worker thread, as the scheduler runs it) and the largest
event-loop lag while it runs (a probe coroutine that sleeps 1 ms and updates a domain now and
then, as finished checks do), file size, and load time into a store synced with the same names.
For the database also: a save after 1 % of the domains changed, and one after all changed.
With --ready: the whole exporter started on a config of N domains and the saved database,
timed to /-/ready (checks point at a closed loopback port, intervals are long).

The JSON rows use today's codec. For the code as it was before the database, measure a copy
of that revision with the same harness, e.g.
    git archive e748d1c^ exporter bench | tar -x -C /tmp/before
    python bench/state.py --code /tmp/before
(its StatusStore.save/load are then the JSON rows, and there are no database rows).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

# --code DIR: import `exporter` and `bench.render` from another checkout (before argparse).
_CODE = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv[:-1] else None
sys.path.insert(0, _CODE or str(Path(__file__).resolve().parents[1]))

from bench.render import populated_store  # noqa: E402
from exporter import statefile  # noqa: E402
from exporter.store import (  # noqa: E402
    STATE_VERSION,
    StatusStore,
    _age_limit,
    _dump_status,
    _load_status,
    _saved_domains,
)

DEAD = "127.92.0.1:9"  # nothing listens: checks fail at once, no network leaves the machine


# The checkout measured predates the database: its own save/load are the JSON file.
JSON_ERA = not hasattr(StatusStore(), "_dirty")


def legacy_save(store: StatusStore, path: Path) -> None:
    """What StatusStore.save did before the database: one JSON document, fsync, rename."""
    if JSON_ERA:
        store.save(path)
        return
    document = {
        "version": STATE_VERSION,
        "domains": {s.name: _dump_status(s) for s in store.snapshot()},
    }
    statefile.write_atomic(path, statefile.encode(document))


def legacy_load(store: StatusStore, path: Path) -> int:
    """What StatusStore.load did before the database (records decoded under the store lock)."""
    if JSON_ERA:
        return store.load(path)
    saved = _saved_domains(statefile.read_document(path)) or {}
    restored = 0
    with store._lock:
        for name, current in list(store._domains.items()):
            if name in saved:
                status, _ = _age_limit(_load_status(current, saved[name]), {}, time.time())
                store._domains[name] = status
                restored += 1
    return restored


def synced_like(store: StatusStore) -> StatusStore:
    fresh = StatusStore()
    fresh.sync((s.name, s.labels, s.expected_nameservers) for s in store.snapshot())
    return fresh


def touch(store: StatusStore, every: int) -> None:
    """Change every `every`-th domain, as finished checks would."""
    for status in store.snapshot()[::every]:
        store.update(status.name, lambda s: replace(s, checks=dict(s.checks)))


@dataclass
class Run:
    seconds: float  # wall time of the work on its worker thread
    cpu: float  # process CPU time meanwhile (both threads)
    lag_max: float  # the event loop's largest lag meanwhile
    lag_p99: float
    gc_max: float  # the longest cyclic-GC pause meanwhile (stops every thread), 0 if none


async def _with_probe(store: StatusStore, work: Callable[[], object]) -> Run:
    lags: list[float] = []
    pauses: list[float] = []
    done = False
    names = [s.name for s in store.snapshot()[:100]]
    started = [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    async def probe() -> None:
        i = 0
        while not done:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t0 - 0.001)
            i += 1
            if i % 10 == 0:  # a finished check lands: takes the store lock
                store.update(names[i % len(names)], lambda s: s)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.05)
    gc.callbacks.append(on_gc)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.to_thread(work)
    finally:
        gc.callbacks.remove(on_gc)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    done = True
    await task
    lags.sort()
    return Run(seconds, cpu, lags[-1], lags[int(len(lags) * 0.99)], max(pauses, default=0.0))


def _python_for(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        statefile.encode({"a": [1.5, "x", None] * 20})


def timed(
    label: str,
    store: StatusStore,
    work: Callable[[], object],
    rounds: int,
    before: Callable[[], object] = lambda: None,
) -> None:
    runs = []
    for _ in range(rounds):
        before()  # not timed
        gc.collect()  # what earlier work left for the collector is not this work's pause
        runs.append(asyncio.run(_with_probe(store, work)))
    secs = [r.seconds for r in runs]
    print(
        f"{label:<40} {statistics.median(secs):6.2f} s ({min(secs):.2f}-{max(secs):.2f}, "
        f"cpu {statistics.median(r.cpu for r in runs):.2f})"
        f"  loop lag max {max(r.lag_max for r in runs) * 1000:5.1f} ms"
        f" p99 {max(r.lag_p99 for r in runs) * 1000:4.1f}"
        f"  gc pause max {max(r.gc_max for r in runs) * 1000:5.1f} ms",
        flush=True,
    )


def timed_load(
    label: str, template: StatusStore, load: Callable[[StatusStore], int], rounds: int
) -> None:
    secs, cpus = [], []
    for _ in range(rounds):
        fresh = synced_like(template)
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        restored = load(fresh)
        secs.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        assert restored == len(template.snapshot()), restored
        assert fresh.snapshot()[-1].checks == template.snapshot()[-1].checks
        del fresh
    print(
        f"{label:<40} {statistics.median(secs):6.2f} s ({min(secs):.2f}-{max(secs):.2f}, "
        f"cpu {statistics.median(cpus):.2f})",
        flush=True,
    )


def size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return f"{total / 1e6:.1f} MB"


def ready_time(store: StatusStore, workdir: Path) -> None:
    """The exporter, started on a config of these domains and their saved state, to /-/ready.
    As after a real restart, every check is next due within the (long) interval: the
    start-up itself is measured, not a burst of checks due at once."""
    now = time.time()
    for i, status in enumerate(store.snapshot()):
        due = now + 3600 + i % 3600
        checks = {k: replace(c, next_due=due) for k, c in status.checks.items()}
        store.update(status.name, lambda s, checks=checks: replace(s, checks=checks))
    db = workdir / "ready.db"
    store.save(db)
    (workdir / "bootstrap.json").write_text(
        '{"version": "1.0", "publication": "2026-11-01T00:00:00Z", '
        f'"services": [[["example"], ["https://{DEAD}/"]]]}}'
    )
    lines = [
        "rdap:",
        f"  bootstrap: {workdir / 'bootstrap.json'}",
        "  allow_private_addresses: true",
        "  interval: 24h",
        "  timeout: 0.2s",
        "dns:",
        f'  root_servers: ["{DEAD}"]',
        "  interval: 24h",
        "  timeout: 0.2s",
        "email:",
        "  interval: 24h",
        "domains:",
    ]
    lines += [f"  - {s.name}" for s in store.snapshot()]
    config = workdir / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = db
    log = (workdir / "exporter.log").open("wb")
    start, wall = time.perf_counter(), time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(config),
         "--web.listen-address", f"127.0.0.1:{port}", "--state.file", str(state)],
        cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"exporter exited: see {workdir / 'exporter.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(120)
        log.close()
    # Where the time went, from the exporter's own log lines.
    marks: dict[str, str] = {}
    for line in (workdir / "exporter.log").read_text().splitlines():
        for key, text in (("restored", "state restored"), ("started", "domainwatch started")):
            if text in line and line.startswith("ts="):
                stamp = datetime.fromisoformat(line.split()[0][3:]).timestamp()
                marks[key] = f"at {stamp - wall:.1f} s"
                if "seconds=" in line:  # the state load itself
                    marks["loading took"] = line.split("seconds=")[1].split()[0].strip('"') + " s"
    steps = ", ".join(f"{k} {v}" for k, v in marks.items())
    print(f"{'exporter start to /-/ready':<40} {seconds:6.2f} s  ({steps})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ready", action="store_true", help="also time exporter start to ready")
    parser.add_argument("--skip-json", action="store_true", help="only the database")
    parser.add_argument("--code", help="measure the exporter package of this checkout")
    parser.add_argument("--floor", type=float, default=2.0, help="seconds of each floor run")
    args = parser.parse_args()
    n = args.domains
    start = time.perf_counter()
    store = populated_store(n)
    print(f"{n} populated domains built in {time.perf_counter() - start:.1f} s", flush=True)
    # The floors, in the same run: what the loop sees while a worker thread only sleeps (the
    # machine's own noise), and while it runs pure Python (the GIL's switch interval).
    floor = args.floor
    timed(f"floor: worker sleeps {floor:g} s", store, lambda: time.sleep(floor), args.rounds)
    timed(f"floor: worker runs Python {floor:g} s", store, lambda: _python_for(floor), args.rounds)
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        folder = Path(tmp)
        if not args.skip_json:
            legacy = folder / "state.json"
            timed(
                "JSON file: save (every domain)",
                store,
                lambda: legacy_save(store, legacy),
                args.rounds,
            )
            print(f"{'JSON file: size':<40} {size(legacy):>9}")
            timed_load("JSON file: load", store, lambda s: legacy_load(s, legacy), args.rounds)
            legacy.unlink()
        if JSON_ERA:
            return
        db = folder / "state.db"

        def new_database() -> None:
            for p in folder.glob("state.db*"):
                p.unlink()
            store._saved = None  # as a store that never saw this database

        # The first save into an empty database (every row inserted), then saves that follow
        # the changes (the store's own baseline from the previous save).
        timed("database: first save (every domain)", store, lambda: store.save(db), args.rounds,
              before=new_database)  # fmt: skip
        timed("database: save, 100 % changed", store, lambda: store.save(db), args.rounds,
              before=lambda: touch(store, 1))  # fmt: skip
        timed("database: save, 1 % changed", store, lambda: store.save(db), args.rounds,
              before=lambda: touch(store, 100))  # fmt: skip
        timed("database: save, nothing changed", store, lambda: store.save(db), args.rounds)
        print(f"{'database: size':<40} {size(db):>9}")
        timed_load("database: load", store, lambda s: s.load(db), args.rounds)
        if args.ready:
            ready_time(store, folder)


if __name__ == "__main__":
    main()
