"""Capacity you can see: domainwatch_check_backlog, domainwatch_rdap_cycle_seconds and the warning
when one RDAP cycle takes longer than rdap.interval.

Unit tests for the counting (`exporter.capacity`), then one exporter subprocess against a real HTTPS
registry and registrar (`RdapServer`, this module's range 127.91.1.0/24) paced so slowly that a
cycle cannot fit the interval, and a reload that gives it room.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from exporter import cli
from exporter.capacity import CapacityCollector, RdapCycles
from exporter.config import Config, DomainConfig, RdapSettings
from exporter.shard import Shard
from tests.support.exporter_proc import ExporterProcess, Scrape
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca

REGISTRY_HOST, REGISTRAR_HOST = "127.91.1.1", "127.91.1.2"
DEAD_ROOT = "127.91.1.3:9"  # nothing listens: DNS checks fail fast
EXPIRY = datetime.now(UTC).replace(microsecond=0) + timedelta(days=90)


# --- the counting ----------------------------------------------------------------------------


def test_cycle_is_domains_over_the_pace_with_registrar_referrals() -> None:
    cycles = RdapCycles(requests_per_second=2.0, interval=60.0)
    cycles.set_domains(["a:443"] * 30 + ["b"] * 4 + [""] * 7)  # '' = no RDAP service: not counted
    assert cycles.seconds() == {"a:443": 15.0, "b": 2.0}
    for i in range(10):
        cycles.set_registrar(f"d{i}", "https://rr.example:8443/rdap/domain/d")
    cycles.set_registrar("d0", "https://b/domain/d0")  # moved to another registrar
    cycles.set_registrar("d1", None)  # no referral any more
    assert cycles.seconds() == {"a:443": 15.0, "b": 2.5, "rr.example:8443": 4.0}
    cycles.forget({f"d{i}" for i in range(5)})  # d5..d9 are no longer watched
    assert cycles.seconds() == {"a:443": 15.0, "b": 2.5, "rr.example:8443": 1.5}
    # Without following referrals, only the registries count.
    cycles.configure(requests_per_second=4.0, interval=60.0, follow=False)
    assert cycles.seconds() == {"a:443": 7.5, "b": 1.0}


def test_warning_once_per_crossing_never_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter.capacity")
    cycles = RdapCycles(requests_per_second=1.0, interval=10.0)
    cycles.set_domains(["slow"] * 11 + ["fast"] * 3)
    for _ in range(5):  # every reload and every bootstrap refresh calls this
        cycles.log_changes()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "server=slow " in warnings[0].getMessage()
    assert "cycle=11.0s interval=10s" in warnings[0].getMessage()
    # Registrar referrals push "fast" over one at a time: one warning when it crosses.
    for i in range(12):
        cycles.set_registrar(f"d{i}", "https://fast/x")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [re.findall(r"server=(\S+)", w.getMessage()) for w in warnings] == [["slow"], ["fast"]]
    # A faster pace brings both back: one info line each, then silence.
    caplog.clear()
    cycles.configure(requests_per_second=10.0, interval=10.0, follow=True)
    cycles.log_changes()
    cycles.log_changes()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("within rdap.interval again" in line for line in lines)


def test_collector_serves_the_counters() -> None:
    cycles = RdapCycles(requests_per_second=0.5, interval=3600.0)
    cycles.set_domains(["rdap.example:443"] * 3)
    registry = CollectorRegistry()
    registry.register(
        CapacityCollector(
            backlog=lambda: {"rdap": 7, "dns": 0, "email": 2},
            cycles=cycles,
            config_domains=lambda: 12,
            shard=Shard(2, 4),
        )
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("domainwatch_check_backlog", check="rdap") == 7
    assert value("domainwatch_check_backlog", check="dns") == 0
    assert value("domainwatch_check_backlog", check="email") == 2
    assert value("domainwatch_rdap_cycle_seconds", server="rdap.example:443") == 6.0
    assert value("domainwatch_rdap_interval_seconds") == 3600
    assert value("domainwatch_shard_info", index="2", count="4") == 1
    assert value("domainwatch_config_domains") == 12


def test_a_reload_looks_up_the_servers_of_new_domains_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100,000 domains: a reload (or a /probe target) must not re-resolve every domain's server.
    bootstrap = write_bootstrap(tmp_path / "bootstrap.json", {"test": "https://rdap.test:8443/"})
    rdap = RdapSettings(bootstrap=str(bootstrap), requests_per_second=2.0)

    def config(names: list[str]) -> Config:
        return Config(rdap=rdap, domains=tuple(DomainConfig(n) for n in names))

    async def scenario() -> None:
        registry = CollectorRegistry()
        names = [f"d{i}.test" for i in range(1000)]
        _m, _s, client, scheduler = cli._wire(config(names), registry)
        try:
            await scheduler.checks["rdap"].start()  # loads the configured bootstrap
            assert (
                registry.get_sample_value(
                    "domainwatch_rdap_cycle_seconds", {"server": "rdap.test:8443"}
                )
                == 500.0
            )
            looked_up: list[str] = []
            real = client.server_key

            def counting(domain: str) -> str:
                looked_up.append(domain)
                return real(domain)

            monkeypatch.setattr(client, "server_key", counting)
            await scheduler.apply_config(config([*names[100:], "new1.test", "new2.test"]))
            assert sorted(looked_up) == ["new1.test", "new2.test"]
            assert (
                registry.get_sample_value(
                    "domainwatch_rdap_cycle_seconds", {"server": "rdap.test:8443"}
                )
                == 451.0
            )
        finally:
            await client.aclose()

    asyncio.run(scenario())


# --- a real exporter against a registry it cannot keep up with --------------------------------

DOMAINS = [f"cap{i:02d}.test" for i in range(20)]
SLOW_RPS = 4  # 20 domains / 4 per second = 5 s per cycle, over the 4 s interval
INTERVAL = 4


def _config(path: Path, tmp: Path, rps: float) -> Path:
    document = {
        "rdap": {
            "bootstrap": str(tmp / "bootstrap.json"),
            "ca_file": str(tmp / "ca.pem"),
            "allow_private_addresses": True,
            "interval": f"{INTERVAL}s",
            "hold_interval": f"{INTERVAL}s",
            "timeout": "1s",
            "requests_per_second": rps,
            "follow_registrar": True,
        },
        "dns": {"root_servers": [DEAD_ROOT], "interval": "1h", "timeout": "0.2s"},
        "concurrency": 2,  # lane slots: the rest of a lane's due checks wait in its queue
        "domains": DOMAINS,
    }
    path.write_text(json.dumps(document))
    return path


def _log_lines(proc: ExporterProcess, words: str) -> list[str]:
    return [line for line in proc.log_path.read_text().splitlines() if words in line]


def test_backlog_and_cycle_of_a_registry_we_cannot_keep_up_with(tmp_path: Path) -> None:
    ca = trustme.CA()
    with (
        RdapServer(ca, host=REGISTRY_HOST) as registry,
        RdapServer(ca, host=REGISTRAR_HOST) as registrar,
    ):
        for name in DOMAINS:
            registry.set_domain(
                name,
                Reply(
                    body=make_domain(
                        name,
                        EXPIRY,
                        ["active"],
                        [f"ns1.{name}"],
                        "Registrar",
                        "9999",
                        related_registrar_url=registrar.domain_url(name),
                    )
                ),
            )
            registrar.set_domain(
                name,
                Reply(
                    body=make_domain(
                        name,
                        EXPIRY,
                        ["active"],
                        [f"ns1.{name}"],
                        "Registrar",
                        "9999",
                    )
                ),
            )
        write_ca(ca, tmp_path / "ca.pem")
        write_bootstrap(tmp_path / "bootstrap.json", {"test": registry})
        config = _config(tmp_path / "config.json", tmp_path, SLOW_RPS)
        with ExporterProcess(config, tmp_path / "run") as proc:
            # Right after start every check is due: all but the lane's 2 slots wait.
            first = proc.scrape()
            backlog = first.value("domainwatch_check_backlog", check="rdap")
            assert backlog is not None and backlog >= 8, first.text
            assert backlog <= len(DOMAINS) - 2
            assert first.value("domainwatch_check_backlog", check="email") is not None
            # The registry's cycle is known from the config alone.
            assert first.value("domainwatch_rdap_cycle_seconds", server=registry.hostport) == 5.0
            assert first.value("domainwatch_rdap_interval_seconds") == INTERVAL

            # Registrar referrals count once the registry's answers have named the registrar.
            def registrar_counted(s: Scrape) -> bool:
                seconds = s.value("domainwatch_rdap_cycle_seconds", server=registrar.hostport)
                return seconds == len(DOMAINS) / SLOW_RPS

            proc.wait_for(registrar_counted, timeout=20, message="registrar cycle of 5 s")
            for _ in range(5):
                proc.scrape()
            # One warning per server, however many scrapes and results came since.
            slow = _log_lines(proc, "RDAP cycle longer than rdap.interval")
            assert len(slow) == 2, slow
            at_registry = [line for line in slow if f"server={registry.hostport} " in line]
            assert len(at_registry) == 1 and "cycle=5.0s interval=4s" in at_registry[0]
            # The registrar's is logged when its referrals first exceed 4 s (the 17th of 20).
            at_registrar = [line for line in slow if f"server={registrar.hostport} " in line]
            assert len(at_registrar) == 1 and "cycle=4.2s interval=4s" in at_registrar[0]

            # Room to breathe: 50 per second makes a cycle 0.4 s, and the queue empties.
            _config(config, tmp_path, 50)
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGHUP)
            scrape = proc.wait_for(
                lambda s: (
                    s.value("domainwatch_rdap_cycle_seconds", server=registry.hostport) == 0.4
                ),
                timeout=10,
                message="the reload's pace",
            )
            assert scrape.value("domainwatch_rdap_cycle_seconds", server=registrar.hostport) == 0.4
            deadline = time.monotonic() + 15
            drained = 0
            while drained < 3 and time.monotonic() < deadline:  # empty at 3 scrapes in a row
                s = proc.scrape()
                empty = all(
                    s.value("domainwatch_check_backlog", check=c) == 0
                    for c in ("rdap", "dns", "email")
                )
                drained = drained + 1 if empty else 0
                time.sleep(0.2)
            assert drained == 3, proc.scrape().text
            back = _log_lines(proc, "RDAP cycle within rdap.interval again")
            assert len(back) == 2, back
            assert len(_log_lines(proc, "RDAP cycle longer than rdap.interval")) == 2
