"""Prometheus exporter conventions, through the running exporter (loopback range 127.90.0.0/16):
--web.telemetry-path, process_* and python_* runtime metrics on the exporter's own registry, and
the alert rules' runbook/dashboard link bases that alerting/README.md rewrites in one command.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.exporter_proc import REPO_ROOT, ExporterProcess, Scrape, _child_env

HOST = "127.90.3.1"
DEAD_RDAP = "https://127.90.3.2:9/"  # nothing listens: the rdap check fails, quickly
ALERTING = REPO_ROOT / "alerting"
RUNBOOK_BASE = "https://github.com/domainwatch/domainwatch/blob/main/alerting/runbook.md"
GRAFANA_BASE = "https://grafana.example.invalid"


class Exporter(ExporterProcess):
    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            f"{HOST}:{self.port}" if arg == f"127.0.0.1:{self.port}" else arg
            for arg in super().command()
        ]

    def fetch(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def write_config(tmp: Path) -> Path:
    bootstrap = tmp / "bootstrap.json"
    bootstrap.write_text(json.dumps({
        "version": "1.0", "publication": "2026-11-01T00:00:00Z",
        "services": [[["test"], [DEAD_RDAP]]],
    }))
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "rdap": {"bootstrap": str(bootstrap), "allow_private_addresses": True, "timeout": "0.3s"},
        "dns": {"root_servers": [f"{HOST}:9"], "timeout": "0.2s"},
        "domains": ["one.test"],
    }))
    return config


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    tmp = tmp_path_factory.mktemp("conventions")
    proc = Exporter(
        write_config(tmp), tmp / "exporter", extra_args=("--web.telemetry-path", "/custom/m")
    )
    with proc:
        yield proc


def scrape(exporter: Exporter, path: str) -> Scrape:
    status, body = exporter.fetch(path)
    assert status == 200, body
    return Scrape.parse(body, time.time())


def test_telemetry_path_serves_metrics_there_only(exporter: Exporter) -> None:
    metrics = scrape(exporter, "/custom/m")
    assert metrics.value("domainwatch_domains") == 1
    assert metrics.series("domainwatch_build_info")
    # The per-domain families come along (one.test's failed RDAP check, once it ran).
    deadline = time.monotonic() + 10
    while scrape(exporter, "/custom/m").value(
        "domain_check_success", domain="one.test", check="rdap"
    ) != 0:
        assert time.monotonic() < deadline, exporter.log_tail()
        time.sleep(0.2)
    assert exporter.fetch("/metrics")[0] == 404
    status, page = exporter.fetch("/")
    assert status == 200 and 'href="custom/m"' in page  # relative: works behind a path prefix
    assert exporter.fetch("/-/healthy") == (200, "OK\n")


def test_process_and_python_runtime_metrics(exporter: Exporter) -> None:
    metrics = scrape(exporter, "/custom/m")
    assert exporter.proc is not None
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    ):
        value = metrics.value(name)
        assert value is not None and value > 0, name
    started = metrics.value("process_start_time_seconds")
    assert started is not None and abs(started - exporter.started) < 10
    labels = metrics.labels("python_info")
    assert labels is not None and labels["implementation"] == "CPython"
    assert labels["major"] == str(sys.version_info.major)
    assert metrics.series("python_gc_objects_collected_total")
    # A probe answers for its domain only: no runtime metrics there.
    status, body = exporter.fetch("/probe?target=one.test")
    assert status == 200, body
    assert "process_" not in body and "python_" not in body


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("metrics", "is not an absolute URL path"),
        ("/a b", "is not an absolute URL path"),
        ("//x", "is not an absolute URL path"),
        ("/probe", "already used"),
        ("/-/healthy", "already used"),
        ("/", "already used"),
        ("/api/v1/domains/x", "already used"),
    ],
)
def test_bad_telemetry_path_is_one_line_at_start(tmp_path: Path, path: str, reason: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(write_config(tmp_path)),
         "--web.listen-address", f"{HOST}:0", "--web.telemetry-path", path],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, env=_child_env(),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --web.telemetry-path"), done.stderr
    assert reason in lines[0]


# --- the alert rules' link bases --------------------------------------------------------------


def documented_sed() -> str:
    """The command in alerting/README.md's "Link bases" section, as a user would paste it."""
    text = (ALERTING / "README.md").read_text()
    section = text.split("## Link bases", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1, section
    return blocks[0].strip()


def annotations(rules_file: Path) -> list[dict[str, str]]:
    doc = yaml.safe_load(rules_file.read_text())
    return [r["annotations"] for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_rules_use_one_base_per_link_kind() -> None:
    notes = annotations(ALERTING / "rules.yml")
    assert notes and all(a["runbook_url"].startswith(RUNBOOK_BASE + "#") for a in notes)
    dashboards = [a["dashboard"] for a in notes if "dashboard" in a]
    assert dashboards and all(d.startswith(GRAFANA_BASE + "/") for d in dashboards)


def test_documented_sed_rewrites_every_link_and_the_tests_still_pass(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (.ci/run installs prometheus)")
    copy = tmp_path / "repo"
    shutil.copytree(ALERTING, copy / "alerting")
    command = documented_sed()
    new_runbook = re.search(r"s\|[^|]+\|([^|]+runbook[^|]*)\|g", command)
    new_grafana = re.search(r"s\|https://grafana.example.invalid\|([^|]+)\|g", command)
    assert new_runbook and new_grafana, command
    subprocess.run(["sh", "-c", command], cwd=copy, check=True, timeout=30)
    for path in [copy / "alerting" / "rules.yml", *(copy / "alerting" / "tests").glob("*.yml")]:
        text = path.read_text()
        assert RUNBOOK_BASE not in text and GRAFANA_BASE not in text, path
    notes = annotations(copy / "alerting" / "rules.yml")
    assert all(a["runbook_url"].startswith(new_runbook.group(1) + "#") for a in notes)
    assert all(
        a["dashboard"].startswith(new_grafana.group(1) + "/") for a in notes if "dashboard" in a
    )
    done = subprocess.run(
        ["promtool", "test", "rules", *sorted(str(p) for p in (copy / "alerting" / "tests")
                                              .glob("*.yml"))],
        cwd=copy, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
