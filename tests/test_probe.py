"""/probe?target=NAME (domain_exporter's interface) through the running exporter, against a real
HTTPS RDAP server. Loopback range 127.90.0.0/16.

One exporter watches `listed.test`; the config allows up to 2 probe-only domains, idle for 2 s
at most. DNS is not under test (the root is a dead port: the dns check fails quickly).
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from exporter.config import ConfigError, ProbeSettings, parse_config
from exporter.probe import ProbeRefused, probe_name
from tests.support.exporter_proc import REPO_ROOT, ExporterProcess, Scrape, free_port
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca

HOST = "127.90.0.1"  # the exporter
RDAP_HOST = "127.90.0.2"
PROMETHEUS_HOST = "127.90.0.3"
NOW = datetime.now(UTC).replace(microsecond=0)
IDLE = 2.0  # probe.idle_timeout
INTERVAL = 1.0  # rdap.interval: background re-checks are visible within seconds


class Exporter(ExporterProcess):
    """The exporter on our own loopback address."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            f"{HOST}:{self.port}" if arg == f"127.0.0.1:{self.port}" else arg
            for arg in super().command()
        ]

    def request(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, str, dict[str, str]]:
        req = urllib.request.Request(self.url + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)

    def probe(self, target: str, timeout: float | None = None) -> tuple[int, str]:
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)} if timeout else {}
        status, body, _ = self.request(
            "/probe?" + urllib.parse.urlencode({"target": target}), headers
        )
        return status, body


def rdap_server(ca: trustme.CA, host: str) -> RdapServer:
    # Our own address where the test support can bind one (it gained `host` recently).
    if "host" in inspect.signature(RdapServer).parameters:
        return RdapServer(ca, host=host)  # type: ignore[call-arg,unused-ignore]
    return RdapServer(ca)


def domain_reply(name: str, days: float, registrar: str = "Good Registrar") -> Reply:
    return Reply(
        body=make_domain(
            name, NOW + timedelta(days=days), ["active"], ["ns1.prov.test"], registrar, "42"
        )
    )


def write_config(path: Path, bootstrap: Path, ca_file: Path, **probe: Any) -> Path:
    document = {
        "rdap": {
            "bootstrap": str(bootstrap),
            "ca_file": str(ca_file),
            "allow_private_addresses": True,
            "interval": f"{INTERVAL:g}s",
            "hold_interval": f"{INTERVAL:g}s",
            "timeout": "1s",
            "requests_per_second": 50,
        },
        "dns": {"root_servers": [f"{HOST}:9"], "interval": "1h", "timeout": "0.2s"},
        "email": {"interval": "1h"},
        "probe": {"allow_unlisted": True, "max_unlisted": 2, "idle_timeout": f"{IDLE:g}s",
                  "max_wait": "5s", **probe},
        "domains": ["listed.test"],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class World:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.registry = rdap_server(self.ca, RDAP_HOST)
        self.bootstrap = write_bootstrap(tmp / "bootstrap.json", {"test": self.registry})
        self.ca_file = write_ca(self.ca, tmp / "ca.pem")
        self.config = write_config(tmp / "config.yaml", self.bootstrap, self.ca_file)
        self.registry.set_domain("listed.test", domain_reply("listed.test", 100))
        for name, days in (("free.test", 200), ("kept.test", 150), ("a.test", 10),
                           ("b.test", 20), ("c.test", 30)):
            self.registry.set_domain(name, domain_reply(name, days))
        self.exporter = Exporter(self.config, tmp / "exporter")

    def reconfigure(self, **probe: Any) -> None:
        write_config(self.config, self.bootstrap, self.ca_file, **probe)
        status, body, _ = self.exporter.request("/-/reload", method="POST")
        assert status == 200, body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("probe"))
    try:
        w.exporter.start()
        w.exporter.wait_for(
            lambda s: s.value("domain_check_success", domain="listed.test", check="rdap") == 1
        )
        yield w
    finally:
        w.exporter.stop()
        w.registry.stop()


def parse(body: str) -> Scrape:
    return Scrape.parse(body, time.time())


def domains_in(scrape: Scrape) -> set[str]:
    return {dict(labels).get("domain", "") for (_n, labels) in scrape.samples}


def unlisted_count(world: World) -> float | None:
    return world.exporter.value("domainwatch_probe_unlisted_domains")


def wait_until_no_unlisted(world: World) -> None:
    world.exporter.wait_for(
        lambda s: s.value("domainwatch_probe_unlisted_domains") == 0, timeout=IDLE * 3
    )


# --- listed domains ----------------------------------------------------------------------------


def test_listed_domain_answers_its_cached_results_without_a_lookup(world: World) -> None:
    before = len(world.registry.requests_for("listed.test"))
    started = time.monotonic()
    answers = [world.exporter.probe("listed.test") for _ in range(10)]
    elapsed = time.monotonic() - started
    assert all(status == 200 for status, _ in answers), answers[0]
    # Ten probes inside one rdap interval: no RDAP request of their own (at most the one
    # background re-check that fell into this second).
    assert len(world.registry.requests_for("listed.test")) - before <= 2
    assert elapsed < 2.0

    probe = parse(answers[-1][1])
    assert domains_in(probe) == {"listed.test"}, probe.text
    assert probe.value("domain_probe_success", domain="listed.test") == 1
    assert probe.value("domain_probe_pending", domain="listed.test") == 0
    assert probe.value("domain_probe_listed", domain="listed.test") == 1
    assert 0 <= (probe.value("domain_probe_duration_seconds", domain="listed.test") or -1) < 1
    days = probe.value("domain_expiry_days", domain="listed.test")
    assert days == pytest.approx(100, abs=0.1)

    # The same per-domain families and values as /metrics (expiry_days moves with the clock).
    metrics = world.exporter.scrape()
    ours = {
        (name, labels): value
        for (name, labels), value in metrics.samples.items()
        if ("domain", "listed.test") in labels and name != "domain_expiry_days"
        and not name.startswith("domain_check_last")  # may tick between the two requests
    }
    theirs = {
        (name, labels): value
        for (name, labels), value in probe.samples.items()
        if not name.startswith(("domain_probe_", "domain_check_last", "domain_expiry_days"))
    }
    assert theirs == ours


def test_bad_targets_are_400_with_a_reason_and_reach_no_server(world: World) -> None:
    seen = len(world.registry.requests)
    cases = {
        "": "target parameter is missing",
        "127.0.0.1": "IP address",
        "[::1]": "IP address",
        "127.1": "IP address",
        "https://free.test/": "not a domain name",
        "exa mple.test": "not a domain name",
        "test": "top-level domain",
        "a" * 2000 + ".test": "not a domain name",
    }
    for target, reason in cases.items():
        status, body = world.exporter.probe(target)
        assert status == 400, (target, body)
        assert reason in body, (target, body)
    status, body, _ = world.exporter.request("/probe?target=a.test&target=b.test")
    assert status == 400 and "one target" in body
    status, body, _ = world.exporter.request("/probe")
    assert status == 400 and "missing" in body
    assert len(world.registry.requests) == seen
    assert unlisted_count(world) == 0


# --- unlisted domains --------------------------------------------------------------------------


def test_unlisted_domain_first_probe_waits_for_its_first_result(world: World) -> None:
    wait_until_no_unlisted(world)
    started = time.monotonic()
    status, body = world.exporter.probe("free.test", timeout=4)
    elapsed = time.monotonic() - started
    assert status == 200, body
    assert elapsed < 3.5  # within the scrape timeout given, minus the margin
    probe = parse(body)
    assert probe.value("domain_probe_success", domain="free.test") == 1, body
    assert probe.value("domain_probe_pending", domain="free.test") == 0
    assert probe.value("domain_probe_listed", domain="free.test") == 0
    assert probe.value("domain_expiry_days", domain="free.test") == pytest.approx(200, abs=0.1)
    assert domains_in(probe) == {"free.test"}

    # Never on /metrics, nor on the status page or its API.
    metrics = world.exporter.scrape()
    assert "free.test" not in metrics.text
    assert metrics.value("domainwatch_probe_unlisted_domains") == 1
    assert "free.test" not in world.exporter.get("/")[1]
    assert world.exporter.get("/api/v1/domains/free.test")[0] == 404

    # domain_exporter probed "www.NAME" as NAME.
    status, body = world.exporter.probe("www.free.test")
    assert status == 200 and domains_in(parse(body)) == {"free.test"}


def test_pending_answer_within_the_scrape_timeout_then_the_result(world: World) -> None:
    wait_until_no_unlisted(world)
    gate = threading.Event()
    world.registry.set_domain(
        "slow.test", Reply(body=domain_reply("slow.test", 50).body, gate=gate, gate_timeout=10)
    )
    try:
        started = time.monotonic()
        # The RDAP timeout (1 s) is longer than what the probe may wait (1 s - 0.5 s).
        status, body = world.exporter.probe("slow.test", timeout=1.0)
        elapsed = time.monotonic() - started
        assert status == 200, body
        # Waited for the result up to the scrape timeout minus 0.5 s, then answered.
        # (far below probe.max_wait, 5 s; the upper bound leaves room for a loaded machine)
        assert 0.4 <= elapsed < 2.0, elapsed
        probe = parse(body)
        assert probe.value("domain_probe_success", domain="slow.test") == 0
        assert probe.value("domain_probe_pending", domain="slow.test") == 1
        assert probe.value("domain_expiry_days", domain="slow.test") is None
        world.registry.wait_for_request("slow.test")
    finally:
        gate.set()
    deadline = time.monotonic() + 5
    while True:
        status, body = world.exporter.probe("slow.test", timeout=1)
        probe = parse(body)
        if probe.value("domain_probe_success", domain="slow.test") == 1:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert probe.value("domain_expiry_days", domain="slow.test") == pytest.approx(50, abs=0.1)


def test_kept_on_the_schedule_while_probed_then_dropped_when_idle(world: World) -> None:
    wait_until_no_unlisted(world)
    probes = 0
    end = time.monotonic() + 3 * INTERVAL + 0.5
    while time.monotonic() < end:
        status, _ = world.exporter.probe("kept.test", timeout=2)
        assert status == 200
        probes += 1
        time.sleep(0.1)
    checked = len(world.registry.requests_for("kept.test"))
    # Re-checked in the background every rdap.interval, not once per probe.
    assert 2 <= checked < probes / 2, (checked, probes)

    # Not probed any more: dropped after idle_timeout (plus one sweep), then never checked.
    world.exporter.wait_for(
        lambda s: s.value("domainwatch_probe_unlisted_domains") == 0, timeout=IDLE * 3
    )
    after_drop = len(world.registry.requests_for("kept.test"))
    time.sleep(2 * INTERVAL + 0.5)
    assert len(world.registry.requests_for("kept.test")) <= after_drop + 1  # one in flight


def test_more_unlisted_domains_than_allowed_is_429(world: World) -> None:
    wait_until_no_unlisted(world)
    assert world.exporter.probe("a.test", timeout=2)[0] == 200
    assert world.exporter.probe("b.test", timeout=2)[0] == 200
    status, body = world.exporter.probe("c.test", timeout=2)
    assert status == 429, body
    assert "probe.max_unlisted" in body and "c.test" in body
    assert world.registry.requests_for("c.test") == []
    # Known ones still answer; listed ones never count against the limit.
    assert world.exporter.probe("a.test")[0] == 200
    assert world.exporter.probe("listed.test")[0] == 200
    metrics = world.exporter.scrape()
    assert metrics.value("domainwatch_probe_requests_total", outcome="over_limit") == 1
    # Once the others went idle, there is room again.
    wait_until_no_unlisted(world)
    assert world.exporter.probe("c.test", timeout=2)[0] == 200


def test_unlisted_refused_when_not_allowed_and_dropped_on_reload(world: World) -> None:
    wait_until_no_unlisted(world)
    assert world.exporter.probe("free.test", timeout=2)[0] == 200
    assert unlisted_count(world) == 1
    try:
        world.reconfigure(allow_unlisted=False)
        status, body = world.exporter.probe("free.test")
        assert status == 403, body
        assert "probe.allow_unlisted" in body
        assert world.exporter.probe("listed.test")[0] == 200
        # The sweep after the reload forgets every probe-only domain.
        wait_until_no_unlisted(world)
        assert "free.test" not in world.exporter.scrape().text
    finally:
        world.reconfigure()
    assert world.exporter.probe("free.test", timeout=2)[0] == 200


# --- the README's migration recipe in a real Prometheus ----------------------------------------


def readme_blocks() -> list[Any]:
    """The YAML blocks of the README's "Moving from domain_exporter" section, in order."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Moving from domain_exporter", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_readme_scrape_job_and_recording_rule_in_prometheus(
    world: World, tmp_path: Path
) -> None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.skip("prometheus is not installed (.ci/run installs it)")
    wait_until_no_unlisted(world)
    jobs, rules_doc = readme_blocks()
    (job,) = jobs
    assert job["metrics_path"] == "/probe"
    # The README's job as written, made fast and pointed at this exporter.
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": ["listed.test", "free.test"]}]
    exporter_address = f"{HOST}:{world.exporter.port}"
    for rule in job["relabel_configs"]:
        if rule.get("target_label") == "__address__":
            rule["replacement"] = exporter_address
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rules_doc))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            job,
            {"job_name": "domainwatch", "static_configs": [{"targets": [exporter_address]}]},
        ],
    }))
    check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    listen = f"{PROMETHEUS_HOST}:{free_port()}"
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address={listen}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        def query(expr: str) -> list[dict[str, Any]]:
            url = f"http://{listen}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return list(json.loads(resp.read())["data"]["result"])
            except OSError:
                return []  # not up yet

        def value(expr: str) -> float | None:
            result = query(expr)
            return float(result[0]["value"][1]) if len(result) == 1 else None

        deadline = time.monotonic() + 20
        wanted = {
            'domain_expiry_days{job="domain",domain="listed.test",instance="listed.test"}': 100,
            'domain_probe_success{job="domain",domain="free.test",instance="free.test"}': 1,
            'domain_probe_success{job="domainwatch",domain="listed.test"}': 1,  # recorded
            'up{job="domain",instance="free.test"}': 1,
        }
        while True:
            got = {expr: value(expr) for expr in wanted}
            if all(v is not None and v == pytest.approx(wanted[e], abs=0.1)
                   for e, v in got.items()):
                break
            log_text = (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (got, log_text)
            time.sleep(0.3)
        # No label clash: the exporter's own `domain` label arrives as it is.
        assert query('{__name__=~"domain_.+",exported_domain!=""}') == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


# --- the probe: config section and target names (no server) ------------------------------------


def test_probe_settings_errors_name_their_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"probe": {
            "allow_unlisted": "yes", "max_unlisted": 100_001, "idle_timeout": "0s",
            "max_wait": "2m", "wait": "1s",
        }})
    assert sorted(info.value.errors) == [
        "probe.allow_unlisted: must be true or false, got 'yes'",
        "probe.idle_timeout: '0s' must be longer than zero",
        "probe.max_unlisted: must be at most 10000, got 100001",
        "probe.max_wait: '2m' is longer than 60s",
        "probe.wait: unknown key",
    ]
    assert parse_config({"probe": {"max_wait": "0s"}}).probe.max_wait == 0.0
    assert parse_config({}).probe == ProbeSettings()


@pytest.mark.parametrize(
    ("raw", "name"),
    [("Example.TEST.", "example.test"), ("bücher.test", "xn--bcher-kva.test"),
     (" a.test ", "a.test")],
)
def test_probe_names_normalise_like_the_config(raw: str, name: str) -> None:
    assert probe_name(raw) == name


@pytest.mark.parametrize("raw", ["", "1.2.3.4", "[::1]", "0x7f.1", "a..test", "-a.test", "test"])
def test_probe_names_refused(raw: str) -> None:
    with pytest.raises(ProbeRefused) as info:
        probe_name(raw)
    assert info.value.status.startswith("400")
