"""End to end: registries without RDAP, through the running exporter and `check --json`.

A real port-43 server on loopback (tests/support/whoisserver.py, 127.89.0.1) serves the real
registry answers of tests/fixtures/whois under the domains they are about; `whois.servers`
points each TLD at it (the registry's query syntax still comes from the curated table).

- A new user with a .jp, a .de and a .io domain: expiry on /metrics from WHOIS, .de honestly
  without one (or with the configured `expires:`), the registry's name servers, statuses; a TLD
  with nothing at all is `unsupported_tld` and `check` says which key to set.
- Every TLD of the curated table: which source the exporter uses (RDAP, WHOIS, nothing) and the
  query the WHOIS server received; what it reads where we hold a real answer.
- A not-found is confirmed like an RDAP 404; pacing per server is observed at the server; a
  dripping server fails at the deadline and an early close is a clean failure reason.

DNS is not under test: the root server is a dead loopback port, so the dns check fails.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cctlds import builtin_table
from exporter.rdap import builtin_bootstrap
from tests.support.exporter_proc import ExporterProcess, run_check
from tests.support.whoisserver import Reply, WhoisServer, fixture

HOST = "127.89.0.1"
DEAD = "127.89.0.9"  # nothing listens here: DNS and RDAP stand-ins that refuse at once

# Domain -> (fixture, expiry the exporter must export, or None)
SERVED = {
    "meta.jp": ("jprs_meta.jp.txt", datetime(2024, 7, 30, 15, tzinfo=UTC)),
    "yahoo.co.jp": ("jprs_yahoo.co.jp.txt", datetime(2025, 9, 29, 15, tzinfo=UTC)),
    "google.jp": ("jprs_google.jp.ja.txt", datetime(2026, 5, 30, 15, tzinfo=UTC)),
    "google.de": ("denic_google.de.txt", None),
    "eurid.eu": ("eurid_eurid.eu.txt", None),
    "google.cn": ("cnnic_google.cn.txt", datetime(2023, 3, 17, 4, 48, 36, tzinfo=UTC)),
    "yandex.ru": ("tcinet_yandex.ru.txt", datetime(2018, 9, 30, 21, tzinfo=UTC)),
    "google.kr": ("kisa_google.kr.txt", datetime(2026, 3, 1, 15, tzinfo=UTC)),
    "google.it": ("nicit_google.it.txt", datetime(2019, 4, 20, 23, tzinfo=UTC)),
    "redis.io": ("nicio_redis.io.txt", datetime(2014, 5, 28, tzinfo=UTC)),
    "google.me": ("domen_google.me.txt", datetime(2021, 6, 13, 17, 17, 40, tzinfo=UTC)),
}


@pytest.fixture(scope="module")
def whois() -> Iterator[WhoisServer]:
    with WhoisServer(HOST) as server:
        for domain, (name, _expiry) in SERVED.items():
            server.set(domain, Reply(fixture(name)))
        # JPRS's not-found names no domain, so it is the real answer for any unknown name.
        server.set("gone.jp", Reply(fixture("jprs_not-found.txt")))
        server.set("drip.jp", Reply(fixture("jprs_not-found.txt"), drip=0.05))
        server.set("hangup.jp", Reply(close_without_answer=True))
        yield server


def config(path: Path, server: WhoisServer, domains: list[Any], **extra: Any) -> Path:
    tlds = {"jp", "de", "eu", "cn", "ru", "kr", "it", "io", "me"}
    document: dict[str, Any] = {
        "rdap": {
            "bootstrap": str(Path("exporter/data/iana-dns-bootstrap.json").resolve()),
            "timeout": "0.5s",
            "interval": "1h",
            "hold_interval": "1s",
        },
        "whois": {
            "servers": {tld: server.address for tld in sorted(tlds)},
            "timeout": "0.5s",
            "requests_per_second": 4,
            "allow_private_addresses": True,  # the stand-in is on loopback
        },
        "dns": {"root_servers": [f"{DEAD}:53"], "interval": "1h", "timeout": "0.2s"},
        "domains": domains,
    }
    for key, value in extra.items():
        document[key] = {**document.get(key, {}), **value}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def ts(when: datetime) -> float:
    return when.timestamp()


def test_a_new_user_with_jp_de_io_and_an_unsupported_tld(
    whois: WhoisServer, tmp_path: Path
) -> None:
    domains: list[Any] = [
        "meta.jp",
        "yahoo.co.jp",
        {"name": "google.de", "expires": "2031-03-31"},
        "redis.io",
        "nothing.vn",  # no RDAP, no WHOIS, no expires: truly nothing
        {"name": "manual.vn", "expires": "2030-01-31"},  # nothing but the configured date
        "gone.jp",
        "drip.jp",
        "hangup.jp",
    ]
    cfg = config(tmp_path / "config.yaml", whois, domains)
    with ExporterProcess(cfg, tmp_path) as proc:
        scrape = proc.wait_for(
            lambda s: (
                s.value("domain_registered", domain="gone.jp") == 0
                and s.value("domain_check_success", domain="drip.jp", check="whois") is not None
                and s.value("domain_check_success", domain="redis.io", check="whois") == 1
            ),
            timeout=30,
            message="WHOIS reads (and the second not-found of gone.jp)",
        )
        log = proc.log_tail(400)

    def v(name: str, **labels: str) -> float | None:
        return scrape.value(name, **labels)

    def registration_errors(domain: str) -> list[dict[str, str]]:
        errors = scrape.series("domain_check_error_info", domain=domain)
        return [labels for labels, _v in errors if labels["check"] in ("rdap", "whois")]

    # .jp general use and co.jp: expiry from WHOIS, the registry's NS set, read by "whois".
    assert v("domain_expiry_timestamp_seconds", domain="meta.jp") == ts(SERVED["meta.jp"][1])  # type: ignore[arg-type]
    assert v("domain_expiry_timestamp_seconds", domain="yahoo.co.jp") == ts(
        SERVED["yahoo.co.jp"][1]  # type: ignore[arg-type]
    )
    assert v("domain_registration_source", domain="meta.jp", source="whois") == 1
    assert v("domain_check_success", domain="meta.jp", check="whois") == 1
    assert scrape.series("domain_check_success", domain="meta.jp", check="rdap") == []
    assert (
        v("domain_nameserver_info", domain="meta.jp", registry="1", nameserver="ns.meta.jp")
        == 1
    )
    assert v("domain_status", domain="meta.jp", status="active") == 1
    assert v("domain_hold", domain="meta.jp") == 0
    assert (
        scrape.labels("domain_info", domain="meta.jp")["rdap_server"] == f"whois://{whois.address}"
    )  # type: ignore[index]
    # .de: DENIC publishes no date; the configured one is exported, with source="config".
    assert v("domain_registry_expiry_timestamp_seconds", domain="google.de") is None
    assert v("domain_expiry_timestamp_seconds", domain="google.de") == ts(
        datetime(2031, 3, 31, tzinfo=UTC)
    )
    assert v("domain_registration_source", domain="google.de", source="whois") == 1
    assert v("domain_registration_source", domain="google.de", source="config") == 1
    assert registration_errors("google.de") == []
    # .io
    assert v("domain_expiry_timestamp_seconds", domain="redis.io") == ts(SERVED["redis.io"][1])  # type: ignore[arg-type]
    # Truly nothing: unsupported_tld; a configured date alone: no error, source="config".
    assert (
        v("domain_check_error_info", domain="nothing.vn", check="rdap", reason="unsupported_tld")
        == 1
    )
    assert registration_errors("manual.vn") == []
    assert scrape.series("domain_check_success", domain="manual.vn", check="rdap") == []
    assert v("domain_registration_source", domain="manual.vn", source="config") == 1
    assert v("domain_expiry_timestamp_seconds", domain="manual.vn") == ts(
        datetime(2030, 1, 31, tzinfo=UTC)
    )
    # A not-found confirmed by a second one a hold_interval later (never by one alone).
    gone = whois.queries_for("gone.jp")
    assert len(gone) >= 2 and gone[1].received - gone[0].received >= 0.9, gone
    assert "domain not registered (confirmed)" in log
    # Deadline and early close: clean, typed failure reasons.
    assert v("domain_check_error_info", domain="drip.jp", check="whois", reason="timeout") == 1
    assert (
        v("domain_check_error_info", domain="hangup.jp", check="whois", reason="connection_error")
        == 1
    )
    # whois.requests_per_second = 4 per server, observed at the server: any 5 queries span at
    # least 4 intervals of 0.25 s (less a margin for a loaded machine's scheduling jitter).
    arrivals = sorted(q.received for q in whois.queries())
    spans = [b - a for a, b in zip(arrivals, arrivals[4:], strict=False)]
    assert len(arrivals) >= 8 and min(spans) >= 0.85, spans


def test_check_says_not_published_and_what_to_set(whois: WhoisServer, tmp_path: Path) -> None:
    cfg = config(tmp_path / "config.yaml", whois, ["google.de", "nothing.vn", "thing.es"])
    code, out = run_check(cfg, "google.de", "nothing.vn", "thing.es")
    by_name = {d["domain"]: d for d in out["domains"]}
    de, vn, es = by_name["google.de"], by_name["nothing.vn"], by_name["thing.es"]
    assert code == 1  # needs attention: an expiry nobody watches
    assert de["registration"]["source"] == "whois"
    assert de["registration"]["expiry_published"] is False
    assert de["rdap"]["expiry"] is None and de["whois"]["success"] is True
    assert "DENIC eG publishes no expiry date" in de["registration"]["hint"]
    assert "`expires: YYYY-MM-DD`" in de["registration"]["hint"]
    assert "whois.servers.vn" in vn["registration"]["hint"]
    # Red.es answers registered clients only: suggested, never used by default.
    assert vn["registration"]["source"] is None
    assert "whois.servers.es: whois.nic.es" in es["registration"]["hint"]
    assert any(p.startswith("expiry not watched") for p in de["problems"])
    _code, table = run_check(cfg, "google.de", json=False)
    assert "not published by DENIC eG" in table


def test_every_tld_of_the_curated_table(whois: WhoisServer, tmp_path: Path) -> None:
    """Which source the exporter uses for each TLD of the table, the query its WHOIS server
    got, and what it reads where a real answer is held.

    Every registry gets its own stand-in (its own host:port, so its own pacer, as in real life):
    RDAP TLDs a refusing port on 127.89.0.9, through a copy of the shipped bootstrap with the same
    TLDs (or rdap.servers for the table's own RDAP services); WHOIS TLDs a loopback server of their
    own, holding their real answer where we have one, else taking the query and hanging up."""
    table = builtin_table()
    shipped = builtin_bootstrap()
    fixture_domain = {d.rsplit(".", 1)[-1]: d for d in SERVED if d.count(".") == 1}
    domains = {tld: fixture_domain.get(tld, f"nic.{tld}") for tld in table.rows}
    expected: dict[str, tuple[str | None, str | None]] = {}
    whois_servers: dict[str, str] = {}
    rdap_servers: dict[str, str] = {}
    services: list[list[list[str]]] = []
    stand_ins: list[WhoisServer] = []
    try:
        for i, (tld, row) in enumerate(sorted(table.rows.items())):
            dead_rdap = f"https://{DEAD}:{1000 + i}/"
            if tld in shipped.services:
                services.append([[tld], [dead_rdap]])
                expected[tld] = ("rdap", dead_rdap)
            elif row.rdap:
                rdap_servers[tld] = dead_rdap
                expected[tld] = ("rdap", dead_rdap)
            elif row.whois:
                server = WhoisServer(HOST).start()
                stand_ins.append(server)
                if domains[tld] in SERVED:
                    server.set(domains[tld], Reply(fixture(SERVED[domains[tld]][0])))
                whois_servers[tld] = server.address
                expected[tld] = ("whois", f"whois://{server.address}")
            else:
                expected[tld] = (None, None)
        # The TLDs outside the table keep their (dead) RDAP service too: same bootstrap TLDs.
        rest = sorted(set(shipped.services) - set(table.rows))
        services.append([rest, [f"https://{DEAD}:999/"]])
        bootstrap = {"version": "1.0", "services": services}
        (tmp_path / "bootstrap.json").write_text(json.dumps(bootstrap), encoding="utf-8")
        cfg = config(
            tmp_path / "config.yaml",
            whois,
            sorted(domains.values()),
            rdap={
                "bootstrap": str(tmp_path / "bootstrap.json"),
                "servers": rdap_servers,
                "allow_private_addresses": True,
                "requests_per_second": 20,
            },
            whois={"servers": whois_servers, "requests_per_second": 20},
        )
        _code, out = run_check(cfg, *sorted(domains.values()), timeout=50)
        seen = {q.domain: q.line for s in stand_ins for q in s.queries()}
    finally:
        for server in stand_ins:
            server.stop()
    by_name = {d["domain"]: d for d in out["domains"]}
    assert len(table.rows) == 50
    for tld, row in table.rows.items():
        domain = domains[tld]
        got = by_name[domain]
        source, server_url = expected[tld]
        assert (got["registration"]["source"], got["registration"]["server"]) == (
            source,
            server_url,
        ), tld
        if source == "whois":
            assert seen.get(domain) == row.whois_query.format(domain=domain), (
                tld,
                seen.get(domain),
            )
        if source is None:
            assert got["rdap"]["error"] == "unsupported_tld", tld
            assert f"whois.servers.{tld}" in got["registration"]["hint"], tld
        if domain in SERVED:
            want = SERVED[domain][1]
            assert got["whois"]["success"] is True, (tld, got)
            assert got["rdap"]["expiry"] == (want.isoformat() if want else None), tld
            assert got["rdap"]["nameservers"], tld


def test_an_expiry_nobody_watches_reaches_a_person() -> None:
    """Both 'expiry not watched' alerts are warnings, and the example Alertmanager config routes
    warnings to a real receiver (not the null one)."""
    rules = yaml.safe_load(Path("alerting/rules.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    receivers = yaml.safe_load(Path("alerting/alertmanager.example.yml").read_text())["receivers"]
    integrations = {r["name"]: [k for k in r if k.endswith("_configs")] for r in receivers}
    for name in ("DomainRdapUnsupported", "DomainExpiryNotPublished"):
        assert alerts[name]["labels"]["severity"] == "warning", name
        routed = subprocess.run(
            ["amtool", "config", "routes", "test", "--config.file",
             "alerting/alertmanager.example.yml", "severity=warning", f"alertname={name}",
             "domain=nothing.vn"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()  # fmt: skip
        assert routed == ["ticket"], routed
        assert integrations["ticket"], "the ticket receiver must deliver somewhere"


def test_a_restart_restores_whois_reads_without_asking_again(
    whois: WhoisServer, tmp_path: Path
) -> None:
    cfg = config(tmp_path / "config.yaml", whois, ["yahoo.co.jp"])
    state = tmp_path / "state.db"
    want = ts(SERVED["yahoo.co.jp"][1])  # type: ignore[arg-type]
    with ExporterProcess(cfg, tmp_path, state_file=state) as proc:
        proc.wait_for(lambda s: s.value("domain_expiry_timestamp_seconds", domain="yahoo.co.jp"))
    asked = len(whois.queries_for("yahoo.co.jp"))
    with ExporterProcess(cfg, tmp_path, state_file=state) as proc:
        scrape = proc.scrape()
        time.sleep(1.0)  # long enough for an immediate re-read to have happened
    assert scrape.value("domain_expiry_timestamp_seconds", domain="yahoo.co.jp") == want
    assert scrape.value("domain_registration_source", domain="yahoo.co.jp", source="whois") == 1
    assert len(whois.queries_for("yahoo.co.jp")) == asked  # restored, not re-read
