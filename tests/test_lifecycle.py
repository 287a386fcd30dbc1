"""The daemon's life: safe reloads (HTTP and SIGHUP), state surviving a restart, clean exit.

Real parts: the exporter subprocess, an HTTPS RDAP server on loopback.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from tests.support.exporter_proc import ExporterProcess, free_port
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
