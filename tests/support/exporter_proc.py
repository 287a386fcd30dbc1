"""Run the exporter as a real subprocess and read its /metrics the way Prometheus would.

    proc = ExporterProcess(config_path, workdir)
    proc.start()                       # waits for GET /-/ready == 200
    scrape = proc.scrape()             # parsed with prometheus_client.parser
    scrape.value("domain_hold", domain="x.test")          # None when absent
    proc.wait_for(lambda s: s.value("domain_hold", domain="x.test") == 1, timeout=10)
    proc.stop()                        # SIGTERM by pid (cmdline checked), SIGKILL after 5 s

`run_check(cfg, "x.test")` runs `python -m exporter check` once and returns (exit code, output).
"""

from __future__ import annotations

import json as jsonlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def free_port() -> int:
    """A port that was free a moment ago (the exporter binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Scrape:
    """One parsed exposition: sample name + label set -> value."""

    samples: dict[SampleKey, float]
    text: str
    taken: float  # time.time() when the response arrived

    @classmethod
    def parse(cls, text: str, taken: float) -> Scrape:
        samples: dict[SampleKey, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                if key in samples:
                    raise AssertionError(f"duplicate series in exposition: {key}")
                samples[key] = float(sample.value)
        return cls(samples=samples, text=text, taken=taken)

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Every series of `name` whose labels include `labels` (a subset match)."""
        want = set(labels.items())
        return [
            (dict(lbls), value)
            for (n, lbls), value in sorted(self.samples.items(), key=lambda kv: sorted(kv[0][1]))
            if n == name and want <= lbls
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one series matching `labels` (subset match); None when absent.

        More than one match is a test bug (the labels given do not pin a series) and raises.
        """
        found = self.series(name, **labels)
        if not found:
            return None
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series: {found}")
        return found[0][1]

    def labels(self, name: str, **labels: str) -> dict[str, str] | None:
        """The full label set of the one matching series (see `value`)."""
        found = self.series(name, **labels)
        if not found:
            return None
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series: {found}")
        return found[0][0]

    def get(self, name: str, labels: Mapping[str, str]) -> float | None:
        """Exact lookup: the series with exactly these labels."""
        return self.samples.get((name, frozenset(labels.items())))

    def for_domain(self, domain: str) -> str:
        """The exposition lines of one domain, for assertion messages."""
        needle = f'domain="{domain}"'
        return "\n".join(line for line in self.text.splitlines() if needle in line)


class ExporterProcess:
    """One `python -m exporter` subprocess on 127.0.0.1:<free port>."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        *,
        state_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 15.0,
    ) -> None:
        self.config = Path(config)
        self.workdir = Path(workdir)
        self.state_file = state_file
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.port = 0
        self.log_path = self.workdir / "exporter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "exporter",
            "--config.file", str(self.config),
            "--web.listen-address", f"127.0.0.1:{self.port}",
            "--log.level", "debug",
        ]
        if self.state_file is not None:
            cmd += ["--state.file", str(self.state_file)]
        return cmd + list(self.extra_args)

    def start(self) -> ExporterProcess:
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=_child_env(),
            )
        self.started = time.time()
        deadline = time.monotonic() + self.ready_timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"exporter exited with {self.proc.returncode} before it was ready\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.05)
        self.stop()
        raise AssertionError(
            f"exporter not ready within {self.ready_timeout}s ({last_error})\n{self.log_tail()}"
        )

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def scrape(self) -> Scrape:
        status, text = self.get("/metrics")
        if status != 200:
            raise AssertionError(f"GET /metrics -> {status}\n{text[:2000]}\n{self.log_tail()}")
        return Scrape.parse(text, time.time())

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().value(name, **labels)

    def wait_for(
        self,
        predicate: Callable[[Scrape], Any],
        timeout: float = 10.0,
        message: str | Callable[[Scrape], str] = "",
        interval: float = 0.2,
    ) -> Scrape:
        """Scrape every `interval` until `predicate(scrape)` is truthy; return that scrape."""
        deadline = time.monotonic() + timeout
        while True:
            scrape = self.scrape()
            if predicate(scrape):
                return scrape
            if time.monotonic() > deadline:
                text = message(scrape) if callable(message) else message
                raise AssertionError(
                    f"condition not met within {timeout}s: {text}\n"
                    f"--- last scrape (domain series) ---\n"
                    + "\n".join(
                        line for line in scrape.text.splitlines()
                        if line.startswith(("domain_", "domainwatch_rdap"))
                    )
                    + f"\n--- exporter log tail ---\n{self.log_tail()}"
                )
            time.sleep(interval)

    def log_tail(self, lines: int = 60, *, scrapes: bool = False) -> str:
        """The last `lines` log lines; the debug line of every scrape is left out unless asked
        for, because wait_for() scrapes five times a second and would bury everything else."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no exporter log)"
        kept = [
            line for line in text.splitlines()
            if scrapes or not ("GET /metrics " in line or "GET /-/ready " in line)
        ]
        return "\n".join(kept[-lines:])

    def stop(self) -> int | None:
        """Terminate our own process by pid; SIGKILL if it is still there after 5 s."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None and _is_our_process(proc.pid, self.config):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                if _is_our_process(proc.pid, self.config):
                    proc.kill()
                proc.wait(timeout=5)
        self.proc = None
        return proc.returncode

    def __enter__(self) -> ExporterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_our_process(pid: int, config: Path) -> bool:
    """Guard against pid reuse: the pid must still run `-m exporter` with our config file."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"exporter" in argv and str(config).encode() in argv


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # `python -m exporter` from the repo root must import this checkout, not an installed copy.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True)
class CheckResult:
    code: int
    stdout: str
    stderr: str


def run_check_raw(
    config: Path, *domains: str, json: bool = True, timeout: float = 60
) -> CheckResult:
    cmd = [sys.executable, "-m", "exporter", "check", "--config.file", str(config)]
    if json:
        cmd.append("--json")
    cmd += list(domains)
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=_child_env(),
        stdin=subprocess.DEVNULL,
    )
    return CheckResult(done.returncode, done.stdout, done.stderr)


def run_check(
    config: Path, *domains: str, json: bool = True, timeout: float = 60
) -> tuple[int, Any]:
    """`python -m exporter check [--json] DOMAIN...` -> (exit code, parsed JSON or the text)."""
    result = run_check_raw(config, *domains, json=json, timeout=timeout)
    if not json:
        return result.code, result.stdout
    try:
        return result.code, jsonlib.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"check --json printed no JSON (exit {result.code}): {exc}\n"
            f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
        ) from exc
