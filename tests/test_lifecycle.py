"""The daemon's life: safe reloads (HTTP and SIGHUP), state surviving a restart, clean exit.

Real parts: the exporter subprocess, an HTTPS RDAP server on loopback.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from exporter.cli import ConfigReloader
from exporter.config import Config, ConfigError
from exporter.selfmetrics import ExporterMetrics
from tests.faults.webexporter import WebExporter, write_config
from tests.support.exporter_proc import ExporterProcess, Scrape, free_port
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca

EXPIRY = datetime.now(UTC).replace(microsecond=0) + timedelta(days=100)


def _config(tmp: Path, domains: list[str], interval: str = "1h") -> str:
    listed = "\n".join(f"  - {d}" for d in domains)
    return f"""
rdap:
  bootstrap: {tmp / 'bootstrap.json'}
  ca_file: {tmp / 'ca.pem'}
  allow_private_addresses: true
  interval: {interval}
  timeout: 2s
  requests_per_second: 50
dns:
  root_servers: ["127.0.0.1:9"]
  interval: 1h
  timeout: 0.2s
domains:
{listed}
"""


@pytest.fixture()
def rdap(tmp_path: Path):
    ca = trustme.CA()
    with RdapServer(ca) as server:
        write_ca(ca, tmp_path / "ca.pem")
        write_bootstrap(tmp_path / "bootstrap.json", {"test": server})
        for name in ("one.test", "two.test", "three.test"):
            server.set_domain(
                name,
                Reply(body=make_domain(name, EXPIRY, ["active"], ["ns1.one.test"], "Reg", "1")),
            )
        yield server


def _post_reload(exporter: ExporterProcess) -> tuple[int, str]:
    request = urllib.request.Request(exporter.url + "/-/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _checked(scrape, domain: str) -> bool:
    return scrape.value("domain_check_success", domain=domain, check="rdap") == 1


def test_reload_adds_removes_and_rejects_broken_config(tmp_path: Path, rdap: RdapServer) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(_config(tmp_path, ["one.test", "two.test"]))
    with ExporterProcess(config, tmp_path / "run") as exporter:
        exporter.wait_for(lambda s: _checked(s, "one.test") and _checked(s, "two.test"))
        assert exporter.value("domainwatch_domains") == 2

        # A good change over HTTP: three.test is checked at once, two.test disappears.
        config.write_text(_config(tmp_path, ["one.test", "three.test"]))
        assert _post_reload(exporter) == (200, "Reloaded\n")
        scrape = exporter.wait_for(lambda s: _checked(s, "three.test"))
        assert scrape.value("domain_expiry_timestamp_seconds", domain="two.test") is None
        assert scrape.value("domain_check_success", domain="two.test", check="rdap") is None
        assert scrape.value("domainwatch_domains") == 2
        # one.test kept its result: it was not re-read just because of the reload.
        assert len(rdap.requests_for("one.test")) == 1

        # A broken file: every problem is reported, the running config keeps serving.
        config.write_text(_config(tmp_path, ["one.test", "exa mple.test"]) + "bogus: 1\n")
        status, body = _post_reload(exporter)
        assert status == 500
        assert "domains[1].name: 'exa mple.test' is not a domain name" in body
        assert "bogus: unknown key" in body
        scrape = exporter.scrape()
        assert scrape.value("domainwatch_config_last_reload_successful") == 0
        assert _checked(scrape, "three.test")
        assert scrape.value("domainwatch_domains") == 2
        assert "config reload failed" in exporter.log_path.read_text()

        # SIGHUP with a good file again: success is reported and the domain set follows.
        before = scrape.value("domainwatch_config_last_reload_success_timestamp_seconds")
        config.write_text(_config(tmp_path, ["one.test", "two.test", "three.test"]))
        assert exporter.proc is not None
        exporter.proc.send_signal(signal.SIGHUP)
        scrape = exporter.wait_for(
            lambda s: s.value("domainwatch_config_last_reload_successful") == 1
            and _checked(s, "two.test")
        )
        assert scrape.value("domainwatch_domains") == 3
        assert scrape.value("domainwatch_config_last_reload_success_timestamp_seconds") > before

        status, _ = exporter.get("/-/reload")
        assert status == 405  # GET must not reload


def test_state_file_survives_restart_without_recheck(tmp_path: Path, rdap: RdapServer) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(_config(tmp_path, ["one.test", "two.test"]))
    state = tmp_path / "state.json"
    with ExporterProcess(config, tmp_path / "run1", state_file=state) as exporter:
        first = exporter.wait_for(lambda s: _checked(s, "one.test") and _checked(s, "two.test"))
    # SIGTERM saved the state; it holds no more than it must and only we can read it.
    assert state.stat().st_mode & 0o777 == 0o600
    requests_before = len(rdap.requests)

    with ExporterProcess(config, tmp_path / "run2", state_file=state) as exporter:
        scrape = exporter.scrape()  # right after /-/ready: no check has run yet
        assert _checked(scrape, "one.test")
        assert scrape.value("domain_expiry_timestamp_seconds", domain="one.test") == first.value(
            "domain_expiry_timestamp_seconds", domain="one.test"
        )
        time.sleep(1.5)
        # The restored results count as results: no re-check burst after a restart.
        assert len(rdap.requests) == requests_before


def test_landing_health_and_ready(tmp_path: Path, rdap: RdapServer) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(_config(tmp_path, ["one.test"]))
    with ExporterProcess(config, tmp_path / "run") as exporter:
        assert exporter.get("/-/healthy")[0] == 200
        assert exporter.get("/-/ready")[0] == 200
        status, body = exporter.get("/")
        assert status == 200 and "/metrics" in body
        assert exporter.get("/nope")[0] == 404
        assert exporter.stop() == 0  # SIGTERM is a clean exit


def test_web_config_tls_and_basic_auth(tmp_path: Path, rdap: RdapServer) -> None:
    import base64
    import ssl

    import bcrypt

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(tmp_path / "web.key")
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "web.crt")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {tmp_path / 'web.crt'}\n"
        f"  key_file: {tmp_path / 'web.key'}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(_config(tmp_path, ["one.test"]))
    exporter = ExporterProcess(
        config, tmp_path / "run", extra_args=("--web.config.file", str(tmp_path / "web.yml"))
    )
    # The harness waits for plain-http readiness, so start by hand and poll over TLS.
    exporter.port = free_port()
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen(exporter.command(), cwd=Path(__file__).resolve().parents[1],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        url = f"https://127.0.0.1:{exporter.port}/metrics"

        def get(auth: bytes | None) -> int:
            request = urllib.request.Request(url)
            if auth:
                request.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=5) as resp:
                    return resp.status
            except urllib.error.HTTPError as err:
                return err.code

        deadline = time.monotonic() + 15
        while True:
            try:
                status = get(b"prometheus:s3cret")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert status == 200
        assert get(None) == 401
        assert get(b"prometheus:wrong") == 401
        assert get(b"nobody:s3cret") == 401
        # Plain HTTP is not served on a TLS listener.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


# --- Any reload failure, of any kind, keeps the running config and sets the gauge to 0 ---

RELOAD_HOST = "127.82.0.4"
DEEP_YAML = "domains:\n  - " + "[" * 10_000 + "\n"
HUGE_INT = "concurrency: " + "9" * 5_000 + "\ndomains:\n  - one.test\n"


def _reload_gauge(ex: WebExporter) -> float | None:
    status, _, body = ex.request("GET", "/metrics")
    assert status == 200
    scrape = Scrape.parse(body.decode(), time.time())
    return scrape.value("domainwatch_config_last_reload_successful")


@pytest.mark.parametrize("broken", [DEEP_YAML, HUGE_INT], ids=["deep_yaml", "huge_int"])
def test_any_reload_failure_sets_gauge_zero(tmp_path: Path, broken: str) -> None:
    config = write_config(tmp_path, domains=("one.test", "two.test"))
    good = config.read_text()
    with WebExporter.start(tmp_path, RELOAD_HOST, config=config) as ex:
        assert _reload_gauge(ex) == 1

        config.write_text(broken)
        status, _, body = ex.request("POST", "/-/reload", timeout=30)
        assert status == 500
        assert len(body.decode().strip().splitlines()) == 1, body[:500]
        assert _reload_gauge(ex) == 0
        assert "Traceback" not in ex.log.read_text()

        config.write_text(good)
        assert ex.request("POST", "/-/reload", timeout=30)[0] == 200
        assert _reload_gauge(ex) == 1

        # SIGHUP: the same, with no one to answer to but the gauge and the log.
        config.write_text(broken)
        ex.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _reload_gauge(ex) != 0:
            assert time.monotonic() < deadline, ex.log_tail()
            time.sleep(0.1)
        status, _, body = ex.request("GET", "/metrics")
        scrape = Scrape.parse(body.decode(), time.time())
        assert scrape.value("domainwatch_domains") == 2  # the old config keeps serving
        failures = [
            line for line in ex.log.read_text().splitlines() if "config reload failed" in line
        ]
        assert len(failures) == 2
        assert "Traceback" not in ex.log.read_text()


class _Raise:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.threads: list[int] = []

    def __call__(self, path: str) -> Config:
        self.threads.append(threading.get_ident())
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError(["a.yaml: domains[0]: bad", "a.yaml: bogus: unknown key"]),
        RecursionError("maximum recursion depth exceeded"),
        ValueError("Exceeds the limit (4300 digits) for integer string conversion"),
        KeyError("surprise"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_reloader_catches_everything_off_the_loop(exc: BaseException) -> None:
    registry = CollectorRegistry()
    metrics = ExporterMetrics(registry)
    metrics.reload_ok.set(1)
    load = _Raise(exc)
    applied: list[Config] = []

    async def apply(config: Config) -> None:
        applied.append(config)

    async def run() -> tuple[str | None, int]:
        reloader = ConfigReloader("a.yaml", load, apply, metrics)
        return await reloader.reload(), threading.get_ident()

    reason, loop_thread = asyncio.run(run())
    assert reason
    assert registry.get_sample_value("domainwatch_config_last_reload_successful") == 0
    assert not applied
    assert load.threads and load.threads[0] != loop_thread  # parsed on a worker thread
    if isinstance(exc, ConfigError):
        assert reason.splitlines() == exc.errors
    else:
        assert len(reason.splitlines()) == 1 and type(exc).__name__ in reason


def test_reloader_apply_failure_and_success() -> None:
    registry = CollectorRegistry()
    metrics = ExporterMetrics(registry)

    async def broken_apply(config: Config) -> None:
        raise RuntimeError("apply broke")

    async def good_apply(config: Config) -> None:
        return None

    async def run() -> tuple[str | None, str | None]:
        bad = await ConfigReloader("a.yaml", lambda p: Config(), broken_apply, metrics).reload()
        good = await ConfigReloader("a.yaml", lambda p: Config(), good_apply, metrics).reload()
        return bad, good

    metrics.reload_ok.set(1)
    bad, good = asyncio.run(run())
    assert bad is not None and "apply broke" in bad
    assert good is None
    assert registry.get_sample_value("domainwatch_config_last_reload_successful") == 1
