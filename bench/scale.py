"""Benchmark: every row of issue 9's table at 1k / 10k / 100k fully populated domains.

    python bench/scale.py [--quick] [--sizes 1000,10000,100000] [--runs 5] [--no-dns]
                          [--churn 300] [--gap 15] [--repo PATH] [--json OUT]

For each size N it writes a config of N domains (expected nameservers and a `team` label; no
`contacts:`, which would put a 100k-domain file over yamlload.MAX_EXPANDED_NODES) and a state
database holding a fully populated result for every domain (RDAP with statuses and registrar, DNS
parent/child/lame, two e-mail verdicts; the same shape as bench/render.py), then measures, each
over several runs (median and min-max):

- config load: `python -m exporter --config.check` wall time (interpreter start included);
- state save: a full save of the N records, an incremental save after 1 % changed, and the
  longest event-loop stall while the save runs on a worker thread (as the scheduler runs it);
- restart with state to ready: `python -m exporter --state.file` until GET /-/ready is 200;
- cold scrape: the first GET /metrics (gzip, as Prometheus asks) right after ready;
- warm /metrics, gzip and plain, through the real HTTP server (exporter/httpserver.py) of the
  exporter process, read by a loopback HTTP client in this process; the *floor* is the same
  bytes served from memory by a minimal socket server in another process, fetched by the same
  client in the same run, interleaved with the exporter's scrapes;
- peak RSS during a scrape: VmHWM of the exporter after resetting it (/proc/PID/clear_refs 5)
  right before the scrape;
- event-loop stall during a scrape: the exporter runs with a probe task on its asyncio loop
  (injected by this script's `--serve` wrapper) that sleeps 5 ms at a time and logs every late
  wake-up; the stall of a scrape is the longest late wake-up overlapping it;
- body size per domain (plain bytes / N) and samples per domain;
- RDAP cycle: domainwatch_rdap_cycle_seconds and the warning log line at the default 1 req/s
  and 6 h interval;
- DNS delegation checks/s against raw dnspython: bench/dnscheck.py is run once (needs root and
  knotd; --no-dns skips it).

Nothing is checked while measuring: every check's next run lies a day ahead in the state file,
and every server the config names is a closed port on 127.94.0.9. Instead, the `--serve` wrapper
lands a fresh successful DNS result for a random domain N/--churn times a second (default 300 s:
the default dns.interval), and warm scrapes are --gap seconds apart (default 15 s), so each warm
scrape finds as many changed domains as a real one would (5,000 at 100k). The exporter listens on
127.94.0.1, the floor server on 127.94.0.2; only loopback is contacted. `--repo PATH` runs
another checkout of the exporter (e.g. `git archive HEAD~5 | tar -x -C /tmp/before`) for a
before/after table. `--quick` is 1k and 10k with 3 runs, without the DNS row (< 2 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import gzip
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve()
HERE = BENCH.parents[1]
EXPORTER_ADDR = "127.94.0.1"
FLOOR_ADDR = "127.94.0.2"
DEAD = "127.94.0.9"  # nothing listens here: RDAP, DNS roots, resolvers
LAG_TICK = 0.005
NS = ("ns1.dns.example", "ns2.dns.example")

GOALS = {
    "warm_gzip": "≤ 0.25 s",
    "warm_plain": "≤ 1 s and ≤ 3 \u00d7 floor",
    "cold": "≤ 3 s",
    "rss": "≤ 600 MB",
    "stall": "≤ 100 ms",
    "body": "≤ 2 KB per domain",
    "config": "≤ 5 s",
    "save": "follows changes; loop stall ≤ 20 ms",
    "restart": "≤ 15 s",
    "dns": "≥ 0.8 \u00d7 raw",
    "rdap": "metric + warning",
}


def _repo_from_argv() -> Path:
    if "--repo" in sys.argv:
        return Path(sys.argv[sys.argv.index("--repo") + 1]).resolve()
    return HERE


REPO = _repo_from_argv()
sys.path.insert(0, str(REPO))


# --- the populated state -------------------------------------------------------------------


def domain_names(n: int) -> list[str]:
    return [f"domain-{i:05d}.example" for i in range(n)]


def write_config(path: Path, n: int, bootstrap: Path) -> None:
    parts = [
        f"""concurrency: 64
rdap:
  bootstrap: {bootstrap}
  allow_private_addresses: true
  allow_http: true
  timeout: 1s
dns:
  root_servers: ["{DEAD}:9"]
  resolvers: ["{DEAD}:9"]
  timeout: 0.2s
  # Restored results older than twice a check's interval are dropped and re-checked: long
  # intervals keep the saved state current for the whole run (the churn stands in for checks).
  interval: 1d
  dnssec_interval: 1d
email:
  interval: 1d
whois:
  allow_private_addresses: true
domains:
"""
    ]
    for i, name in enumerate(domain_names(n)):
        parts.append(
            f"""  - name: {name}
    nameservers: [{NS[0]}, {NS[1]}]
    labels:
      team: team{i % 10}
"""
        )
    path.write_text("".join(parts))


def populated_store(n: int, now: float) -> Any:
    """Every domain with a result of every check the checkout has (RDAP with statuses and
    registrar, DNS, two e-mail verdicts, and DNSSEC and nameserver-domain results where those
    checks exist), consistent with what the checks keep (the contacts are on record), and
    every check's next run a day ahead: the exporter checks nothing while measured, except the
    WHOIS check, which steps aside for RDAP domains at start-up (a never-successful check is
    due at once after a restore)."""
    from exporter import store as store_module
    from exporter.registration import ContactEmail, Registration
    from exporter.store import (
        CHECKS,
        CheckState,
        ContactVerdict,
        DnsResult,
        DomainStatus,
        EmailResult,
        RdapResult,
        StatusStore,
    )

    extra: dict[str, Any] = {}
    ran = ["rdap", "dns", "email"]
    if hasattr(store_module, "DnssecResult"):  # issue 11
        extra["dnssec"] = store_module.DnssecResult(
            parent_zone="example", signed=False, serial_drift=0, measured_at=now
        )
        ran.append("dnssec")
    if hasattr(store_module, "NsDomainResult"):
        verdict = store_module.NsDomainVerdict("dns.example", True, "ok")
        extra["nsdomain"] = store_module.NsDomainResult((verdict,))
        ran.append("nsdomain")
    store = StatusStore()
    if hasattr(store, "keep_expositions"):  # as the exporter saves: each record's lines too
        from exporter.collector import EXPOSITION_FORMAT, pack_exposition

        store.keep_expositions(pack_exposition, EXPOSITION_FORMAT)
    names = domain_names(n)
    store.sync((name, {"team": f"team{i % 10}"}, NS) for i, name in enumerate(names))
    # RDAP contacts as restored from a state file (no address kept): their verdicts stay.
    contacts = (ContactEmail("registrant", "real"), ContactEmail("technical", "real"))
    for i, name in enumerate(names):
        # Checks ran at different times, as in a real state: no two domains share a timestamp
        # (sharing equal values must not make this benchmark's records cheaper than real ones).
        ran_at = now - (i % 600) - i * 1e-4
        later = ran_at + 86400.0
        ok = CheckState(success=True, last_attempt=ran_at, last_success=ran_at, next_due=later)
        # A check that never ran (WHOIS beside RDAP) is due within its interval (6 h), as the
        # scheduler leaves it: a restore keeps that, and rewrites no row.
        idle = CheckState(next_due=ran_at + 6 * 3600.0)
        checks = {**dict.fromkeys(CHECKS, idle), **dict.fromkeys(ran, ok)}
        if "dnssec" in extra:
            extra["dnssec"] = replace(extra["dnssec"], measured_at=ran_at)
        reg = Registration(
            name=name,
            expiry=datetime.fromtimestamp(now, UTC) + timedelta(days=30 + i % 300),
            statuses=(
                "client delete prohibited",
                "client transfer prohibited",
                "client update prohibited",
            ),
            nameservers=NS,
            registrar="Example Registrar, Inc.",
            registrar_iana_id="9999",
            contacts=contacts,
        )
        status = DomainStatus(
            name=name,
            labels={"team": f"team{i % 10}"},
            expected_nameservers=NS,
            rdap=RdapResult(
                registered=True,
                server=f"http://{DEAD}:9/",
                registration=reg,
                read_at=ran_at,
            ),
            dns=DnsResult(
                parent_zone="example",
                parent=NS,
                child=NS,
                delegated=True,
                lame=dict.fromkeys(NS),
                mismatch=False,
                inconsistent=False,
                measured_at=ran_at,
            ),
            email=EmailResult(
                (
                    ContactVerdict("registrant", "rdap", "mail.example", True, "mx_ok", False),
                    ContactVerdict("technical", "rdap", "mail.example", True, "mx_ok", False),
                )
            ),
            checks=checks,
            **extra,
        )
        store.update(name, lambda _old, s=status: s)
    return store


# --- measuring helpers ---------------------------------------------------------------------


@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    def cell(self, fmt: Callable[[float], str]) -> str:
        if not self.values:
            return "n/a"
        med = statistics.median(self.values)
        if len(self.values) == 1:
            return fmt(med)
        return f"{fmt(med)} ({fmt(min(self.values))}\u2013{fmt(max(self.values))})"


def seconds(v: float) -> str:
    return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"


def millis(v: float) -> str:
    return f"{v * 1000:.0f} ms"


def mebibytes(v: float) -> str:
    return f"{v / 2**20:.0f} MiB"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, key: str) -> int:
    """A /proc/PID/status field in bytes (VmHWM, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid: int) -> None:
    # "5" resets VmHWM to the current RSS (Linux >= 4.0), so the next read is this scrape's peak.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Fetch:
    seconds: float
    size: int
    status: int


def fetch(
    host: str, port: int, path: str, gzipped: bool, sink: Any = None, timeout: float = 300.0
) -> Fetch:
    """GET path on a fresh connection, reading the whole body (into `sink` if given)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Accept-Encoding": "gzip"} if gzipped else {}
    start = time.perf_counter()
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    size = 0
    while True:
        chunk = resp.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    elapsed = time.perf_counter() - start
    conn.close()
    return Fetch(elapsed, size, resp.status)


class LagLog:
    """Reads the exporter's loop-lag probe log: 'monotonic_end lag' per late wake-up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def max_between(self, start: float, end: float) -> float:
        worst = 0.0
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 2:
                    continue
                woke, lag = float(parts[0]), float(parts[1])
                # The loop was stuck from woke - lag - tick to woke: count it if that overlaps.
                if woke >= start and woke - lag - LAG_TICK <= end:
                    worst = max(worst, lag)
        return worst


# --- the exporter process ------------------------------------------------------------------


class Exporter:
    def __init__(self, workdir: Path, config: Path, state: Path, churn: float) -> None:
        self.workdir = workdir
        self.churn = churn
        self.config = config
        self.state = state
        self.port = free_port(EXPORTER_ADDR)
        self.lag = LagLog(workdir / f"lag-{self.port}.log")
        self.log = workdir / f"exporter-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600.0) -> float:
        """Start and wait for /-/ready; returns seconds from spawn to ready."""
        cmd = [
            sys.executable, str(BENCH), "--repo", str(REPO),
            "--serve", str(self.lag.path), str(self.churn), "--",
            "--config.file", str(self.config), "--state.file", str(self.state),
            "--web.listen-address", f"{EXPORTER_ADDR}:{self.port}", "--log.level", "info",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        start = time.perf_counter()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if fetch(EXPORTER_ADDR, self.port, "/-/ready", False, timeout=2).status == 200:
                    return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("exporter not ready in time")

    def scrape(self, gzipped: bool, sink: Any = None) -> tuple[Fetch, int, float]:
        """(fetch, peak RSS during it, longest loop stall during it)."""
        assert self.proc is not None
        reset_peak(self.proc.pid)
        t0 = time.monotonic()
        got = fetch(EXPORTER_ADDR, self.port, "/metrics", gzipped, sink)
        t1 = time.monotonic()
        peak = proc_status(self.proc.pid, "VmHWM")
        time.sleep(0.05)  # let the probe log a stall that ended with the response
        if got.status != 200:
            raise RuntimeError(f"/metrics answered {got.status}")
        return got, peak, self.lag.max_between(t0, t1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def serve_with_lag_probe(lag_path: str, churn: float, argv: list[str]) -> int:
    """`--serve`: run the exporter with a loop-lag probe task on its event loop and, with
    `churn` > 0, a task that lands a successful DNS result for a random domain N/churn times
    a second, as the delegation checks of N domains at dns.interval = churn seconds do."""
    from exporter import cli, scheduler

    original = scheduler.Scheduler.run

    async def probe() -> None:
        with open(lag_path, "a", buffering=1) as out:  # noqa: ASYNC230 - opened once
            last = time.monotonic()
            while True:
                await asyncio.sleep(LAG_TICK)
                now = time.monotonic()
                lag = now - last - LAG_TICK
                if lag > 0.002:
                    out.write(f"{now:.6f} {lag:.6f}\n")
                last = now

    async def land_dns_results(sched: Any) -> None:
        names = list(sched._domains)
        pick = random.Random(9)
        owed = 0.0
        while names:
            await asyncio.sleep(0.1)
            owed += len(names) / churn * 0.1
            now = time.time()

            def renew(s: Any, now: float = now) -> Any:
                dns_state = replace(
                    s.check("dns"), last_attempt=now, last_success=now, next_due=now + churn
                )
                dns = replace(s.dns, measured_at=now) if s.dns is not None else None
                return replace(s, dns=dns, checks={**s.checks, "dns": dns_state})

            while owed >= 1:
                owed -= 1
                sched.store.update(pick.choice(names), renew)

    async def run(self: Any) -> None:
        tasks = [asyncio.ensure_future(probe())]
        if churn > 0:
            tasks.append(asyncio.ensure_future(land_dns_results(self)))
        try:
            await original(self)
        finally:
            for task in tasks:
                task.cancel()

    scheduler.Scheduler.run = run  # type: ignore[method-assign]
    return cli.main(argv)


# --- the floor: the same bytes from memory -------------------------------------------------


def serve_floor(plain_path: str, gz_path: str, port_file: str) -> None:
    """`--floor`: serve two files' bytes from memory, picking by Accept-Encoding."""
    plain = Path(plain_path).read_bytes()
    gz = Path(gz_path).read_bytes()
    listener = socket.create_server((FLOOR_ADDR, 0))
    Path(port_file).write_text(str(listener.getsockname()[1]))

    def answer(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            gzipped = b"gzip" in head.lower()
            body = gz if gzipped else plain
            extra = b"Content-Encoding: gzip\r\n" if gzipped else b""
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n" + extra
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )  # fmt: skip
            conn.sendall(memoryview(body))

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


class Floor:
    def __init__(self, workdir: Path, plain: Path, gz: Path) -> None:
        port_file = workdir / "floor.port"
        port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH), "--floor", str(plain), str(gz), str(port_file)]
        )
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("floor server did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def get(self, gzipped: bool) -> Fetch:
        return fetch(FLOOR_ADDR, self.port, "/metrics", gzipped)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --- the state save ------------------------------------------------------------------------


def measure_saves(store: Any, path: Path, runs: int) -> dict[str, Series]:
    """Full and 1 % incremental saves, on a worker thread as the scheduler runs them, with a
    loop-lag probe on this process's event loop."""
    out = {k: Series() for k in ("full", "incr", "full_stall", "incr_stall", "rows")}
    names = [s.name for s in store.snapshot()]

    async def timed(save: Callable[[], object]) -> tuple[float, float]:
        worst = 0.0
        done = False

        async def probe() -> None:
            nonlocal worst
            last = time.monotonic()
            while not done:
                await asyncio.sleep(LAG_TICK)
                now = time.monotonic()
                worst = max(worst, now - last - LAG_TICK)
                last = now

        task = asyncio.ensure_future(probe())
        await asyncio.sleep(0.02)
        start = time.perf_counter()
        await asyncio.to_thread(save)
        elapsed = time.perf_counter() - start
        done = True
        await task
        return elapsed, worst

    async def main() -> None:
        for run in range(runs):
            _remove_db(path)
            store._saved = None  # a fresh file: the first save writes every row
            elapsed, stall = await timed(lambda: store.save(path))
            out["full"].add(elapsed)
            out["full_stall"].add(stall)
            for name in names[run::100]:
                store.update(name, lambda s: replace(s))
            touched: list[int] = []
            elapsed, stall = await timed(functools.partial(_save_into, store, path, touched))
            out["incr"].add(elapsed)
            out["incr_stall"].add(stall)
            out["rows"].add(touched[0])

    asyncio.run(main())
    return out


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _save_into(store: Any, path: Path, touched: list[int]) -> None:
    touched.append(store.save(path))


# --- one size ------------------------------------------------------------------------------


def domain_lines(path: Path, opener: Callable[..., Any] = open) -> Iterator[bytes]:
    with opener(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"domain_"):
                yield line


def measure_size(
    n: int, runs: int, workdir: Path, log: Callable[[str], None], churn: float, gap: float
) -> dict[str, Any]:
    res: dict[str, Any] = {"n": n}
    work = workdir / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    bootstrap = work / "bootstrap.json"
    bootstrap.write_text(
        json.dumps(
            {
                "version": "1.0",
                "publication": "2026-11-01T00:00:00Z",
                "services": [[["example"], [f"http://{DEAD}:9/"]]],
            }
        )
    )
    config = work / "config.yaml"
    write_config(config, n, bootstrap)

    log(f"[{n}] config load (--config.check) x{runs}")
    res["config"] = Series()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(config)],
            cwd=REPO, env=env, capture_output=True, text=True,
        )  # fmt: skip
        res["config"].add(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"--config.check failed: {done.stdout}{done.stderr}")

    log(f"[{n}] building the populated store and timing state saves x{runs}")
    now = time.time()
    store = populated_store(n, now)
    state = work / "state.db"
    saves = measure_saves(store, work / "save-bench.db", runs)
    res.update({f"save_{k}": v for k, v in saves.items()})
    store._saved = None
    store.save(state)
    res["state_bytes"] = state.stat().st_size
    del store
    gc.collect()
    pristine = work / "state.pristine"
    shutil.copyfile(state, pristine)

    res["restart"], res["cold"], res["cold_rss"] = Series(), Series(), Series()
    exporter: Exporter | None = None
    for run in range(runs):
        shutil.copyfile(pristine, state)
        for suffix in ("-wal", "-shm"):
            Path(str(state) + suffix).unlink(missing_ok=True)
        exporter = Exporter(work, config, state, churn)
        log(f"[{n}] restart with state {run + 1}/{runs}")
        res["restart"].add(exporter.start())
        got, peak, _stall = exporter.scrape(gzipped=True)
        res["cold"].add(got.seconds)
        res["cold_rss"].add(peak)
        if run < runs - 1:
            exporter.stop()
    assert exporter is not None and exporter.proc is not None

    try:
        plain_file, gz_file = work / "body.txt", work / "body.gz"
        with plain_file.open("wb") as sink:
            exporter.scrape(gzipped=False, sink=sink)
        with gz_file.open("wb") as sink:
            exporter.scrape(gzipped=True, sink=sink)
        plain_size = plain_file.stat().st_size
        res["body_bytes"] = plain_size
        res["gz_bytes"] = gz_file.stat().st_size
        res["samples"] = sum(1 for _ in domain_lines(plain_file))
        if n <= 10000:  # the gzip members decompress to the plain body's series
            plain_series = [line.rsplit(b" ", 1)[0] for line in domain_lines(plain_file)]
            gz_series = [line.rsplit(b" ", 1)[0] for line in domain_lines(gz_file, gzip.open)]
            if sorted(plain_series) != sorted(gz_series):
                raise RuntimeError("gzip body does not decompress to the plain body")
        text = plain_file.read_bytes()
        cycle = re.findall(rb"^domainwatch_rdap_cycle_seconds\{[^}]*\} (\S+)$", text, re.M)
        interval = re.findall(rb"^domainwatch_rdap_interval_seconds (\S+)$", text, re.M)
        res["rdap_cycle"] = max((float(v) for v in cycle), default=None)
        res["rdap_interval"] = float(interval[0]) if interval else None
        res["rdap_warning"] = b"RDAP cycle longer than rdap.interval" in exporter.log.read_bytes()
        del text

        floor = Floor(work, plain_file, gz_file)
        try:
            keys = ("gzip", "plain", "floor_gzip", "floor_plain", "rss", "stall", "rss_steady")
            for key in keys:
                res[key] = Series()
            for run in range(runs):
                log(f"[{n}] warm scrapes {run + 1}/{runs}")
                for gzipped, name in ((True, "gzip"), (False, "plain")):
                    time.sleep(gap)  # results land meanwhile, as between two real scrapes
                    res["rss_steady"].add(proc_status(exporter.proc.pid, "VmRSS"))
                    got, peak, stall = exporter.scrape(gzipped)
                    res[name].add(got.seconds)
                    res["rss"].add(peak)
                    res["stall"].add(stall)
                    res["floor_" + name].add(floor.get(gzipped).seconds)
        finally:
            floor.stop()
        plain_file.unlink()
        gz_file.unlink()
    finally:
        exporter.stop()
    res["body_per_domain"] = plain_size / n
    return res


# --- DNS -----------------------------------------------------------------------------------


def measure_dns(log: Callable[[str], None], quick: bool) -> dict[str, Any]:
    script = REPO / "bench" / "dnscheck.py"
    if not script.exists():
        return {"error": "bench/dnscheck.py not in this checkout"}
    args = ["--domains", "200", "--rounds", "3"] if quick else ["--rounds", "5"]
    log("DNS: bench/dnscheck.py " + " ".join(args))
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=900,
    )  # fmt: skip
    out: dict[str, Any] = {"output": done.stdout}
    if done.returncode != 0:
        out["error"] = (done.stderr.strip().splitlines() or ["failed"])[-1]
        return out
    rate = re.search(r"^cached\s+(\d+)\s+(\d+)-(\d+)", done.stdout, re.M)
    # "cached / raw-cached: checks/s 0.87 (0.70-1.13)" (older: "median 0.87 (min 0.70, max 1.13")
    ratio = re.search(
        r"cached / raw-cached: (?:checks/s|median) ([\d.]+) "
        r"\((?:min )?([\d.]+)(?:-|, max )([\d.]+)",
        done.stdout,
    )
    if rate:
        out["rate"] = f"{rate.group(1)}/s ({rate.group(2)}\u2013{rate.group(3)})"
    if ratio:
        out["ratio"] = f"{ratio.group(1)} \u00d7 ({ratio.group(2)}\u2013{ratio.group(3)})"
    return out


# --- the table -----------------------------------------------------------------------------


def table(results: list[dict[str, Any]], dns: dict[str, Any] | None) -> str:
    sizes = [r["n"] for r in results]
    head = "| row | " + " | ".join(f"{n:,} domains" for n in sizes) + " | goal |"
    lines = [head, "|---" * (len(sizes) + 2) + "|"]

    def row(label: str, goal: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in results) + f" | {goal} |")

    def ratio(r: dict[str, Any], kind: str) -> str:
        each = [a / b for a, b in zip(r[kind].values, r["floor_" + kind].values, strict=True)]
        return Series(each).cell(lambda v: f"{v:.1f}\u00d7")

    row(
        "warm `/metrics`, gzip",
        GOALS["warm_gzip"],
        lambda r: f"{r['gzip'].cell(seconds)}; floor {r['floor_gzip'].cell(seconds)}",
    )
    row(
        "warm `/metrics`, plain",
        GOALS["warm_plain"],
        lambda r: (
            f"{r['plain'].cell(seconds)}; floor {r['floor_plain'].cell(seconds)}; "
            f"{ratio(r, 'plain')} floor"
        ),
    )
    row("cold (first) scrape, gzip", GOALS["cold"], lambda r: r["cold"].cell(seconds))
    row(
        "peak RSS during a scrape",
        GOALS["rss"],
        lambda r: (
            f"{r['rss'].cell(mebibytes)}; steady {r['rss_steady'].cell(mebibytes)}; "
            f"cold scrape {r['cold_rss'].cell(mebibytes)}"
        ),
    )
    row("event-loop stall during a scrape", GOALS["stall"], lambda r: r["stall"].cell(millis))
    row(
        "body size",
        GOALS["body"],
        lambda r: (
            f"{r['body_bytes'] / 2**20:.1f} MiB, {r['body_per_domain'] / 1000:.2f} KB "
            f"and {r['samples'] / r['n']:.1f} samples per domain; gzip "
            f"{r['gz_bytes'] / 2**20:.1f} MiB"
        ),
    )
    row("config load (`--config.check`)", GOALS["config"], lambda r: r["config"].cell(seconds))
    row(
        "state save, full (all rows)",
        "",
        lambda r: (
            f"{r['save_full'].cell(seconds)}; file {r['state_bytes'] / 2**20:.0f} MiB; "
            f"stall {r['save_full_stall'].cell(millis)}"
        ),
    )
    row(
        "state save, 1 % changed",
        GOALS["save"],
        lambda r: (
            f"{r['save_incr'].cell(seconds)} ({r['save_rows'].cell(lambda v: f'{v:.0f}')}"
            f" rows); stall {r['save_incr_stall'].cell(millis)}"
        ),
    )
    row("restart with state to ready", GOALS["restart"], lambda r: r["restart"].cell(seconds))
    row(
        "RDAP cycle at 1 req/s, 6 h interval",
        GOALS["rdap"],
        lambda r: (
            "n/a"
            if r["rdap_cycle"] is None
            else f"{r['rdap_cycle'] / 3600:.1f} h (metric; interval "
            f"{r['rdap_interval'] / 3600:.0f} h), "
            f"warning logged: {'yes' if r['rdap_warning'] else 'no'}"
        ),
    )
    if dns is not None:
        text = (
            dns.get("error")
            or f"{dns.get('rate', '?')} = {dns.get('ratio', '?')} raw (cached cuts)"
        )
        lines.append(
            f"| DNS delegation checks (bench/dnscheck.py) | {text} |"
            + " |" * (len(sizes) - 1)
            + f" {GOALS['dns']} |"
        )
    return "\n".join(lines)  # fmt: skip


def main() -> None:
    if "--serve" in sys.argv:
        i = sys.argv.index("--serve")
        rest = sys.argv[sys.argv.index("--") + 1 :]
        sys.exit(serve_with_lag_probe(sys.argv[i + 1], float(sys.argv[i + 2]), rest))
    if "--floor" in sys.argv:
        i = sys.argv.index("--floor")
        serve_floor(*sys.argv[i + 1 : i + 4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k, 3 runs, no DNS row")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-dns", action="store_true")
    parser.add_argument("--repo", default=str(HERE), help="checkout whose exporter is measured")
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    parser.add_argument(
        "--churn",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="every domain gets a new DNS result once per SECONDS on average while measured, "
        "as at the default dns.interval (0: nothing changes)",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait before each warm scrape, as between two Prometheus scrapes (default 15, "
        "--quick 3)",
    )
    args = parser.parse_args()
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 3 if args.quick else args.runs
    gap = args.gap if args.gap is not None else 3.0 if args.quick else 15.0
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s {text}", file=sys.stderr, flush=True)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="domainwatch-scale-"))
    results = []
    try:
        for n in sizes:
            results.append(measure_size(n, runs, workdir, log, args.churn, gap))
            gc.collect()
            if args.json:  # after every size: a long run that dies later keeps what it measured
                Path(args.json).write_text(json.dumps(results, default=_plain, indent=1))
        dns = None if args.quick or args.no_dns else measure_dns(log, args.quick)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nrepo {REPO} ({_revision()}), Python {sys.version.split()[0]}, {os.cpu_count()} "
        f"CPUs, load average {os.getloadavg()[0]:.1f}, {runs} runs: median (min\u2013max); "
        f"DNS results land for every domain once per {args.churn:g} s, warm scrapes "
        f"{gap:g} s apart\n"
    )
    print(table(results, dns))
    if dns and dns.get("output"):
        print("\nbench/dnscheck.py:\n" + dns["output"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, default=_plain, indent=1))
    log("done")


def _plain(value: object) -> object:
    return value.values if isinstance(value, Series) else str(value)


def _revision() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip() or "not a git checkout"


if __name__ == "__main__":
    main()
