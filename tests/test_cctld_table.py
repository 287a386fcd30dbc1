"""The curated registry table (exporter/data/cctlds.json): well-formed, sourced, honest about what
is unverified, consistent with the real answers we hold, and what the exporter chooses for every
TLD in it with no configuration at all (the shipped IANA bootstrap, then the table)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from exporter.cctlds import builtin_table, parse_table
from exporter.checks.registration import plan_source, with_builtin_rdap
from exporter.config import Config, RdapSettings, WhoisSettings
from exporter.rdap import RdapClient, builtin_bootstrap
from exporter.whois import WhoisClient, parse_response

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "exporter" / "data" / "cctlds.json"
DOC = ROOT / "exporter" / "data" / "CCTLDS.md"
FACTS = {"whois", "whois_query", "expiry_published", "rdap"}


def rows() -> list[dict[str, object]]:
    document = json.loads(TABLE.read_text(encoding="utf-8"))
    return list(document["tlds"])


def test_fifty_rows_each_sourced() -> None:
    table = rows()
    assert len(table) == 50
    assert len({r["tld"] for r in table}) == 50
    for row in table:
        sources = row["sources"]
        assert isinstance(sources, dict) and sources, row["tld"]
        assert all(str(url).startswith(("https://", "http://")) for url in sources.values())
        assert sources["registry"] == f"https://www.iana.org/domains/root/db/{row['tld']}.html"
        assert set(row["unverified"]) <= FACTS, row["tld"]  # type: ignore[arg-type]
        assert row["expiry_published"] in (True, False, None), row["tld"]
        assert "{domain}" in str(row["whois_query"]), row["tld"]
        assert row["operator"], row["tld"]
        # A fact nobody verified is not asserted: expiry_published stays null.
        if "expiry_published" in row["unverified"]:  # type: ignore[operator]
            assert row["expiry_published"] is None, row["tld"]


def test_bootstrap_flag_matches_the_shipped_bootstrap() -> None:
    services = builtin_bootstrap().services
    for row in rows():
        assert row["rdap_in_bootstrap"] == (row["tld"] in services), row["tld"]


def test_every_row_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for row in rows():
        assert f"| .{row['tld']} |" in text, row["tld"]


@pytest.mark.parametrize("row", rows(), ids=lambda r: str(r["tld"]))
def test_evidence_agrees_with_the_row(row: dict[str, object]) -> None:
    """Where the row cites a real answer, that answer shows what the row says about expiry."""
    evidence = row.get("evidence")
    if not evidence:
        pytest.skip("no real answer held for this registry")
    path = ROOT / str(evidence)
    text = path.read_text(encoding="utf-8")
    domain = {
        "jp": "meta.jp",
        "de": "google.de",
        "eu": "eurid.eu",
        "ch": "google.ch",
        "cn": "google.cn",
        "ru": "yandex.ru",
        "kr": "google.kr",
        "br": "google.com.br",
        "it": "google.it",
        "io": "redis.io",
        "me": "google.me",
    }[str(row["tld"])]
    registered, reg = parse_response(domain, text.split("[whois.jprs.jp]\n", 1)[-1])
    assert registered is True and reg is not None
    if row["expiry_published"] is not None:
        assert (reg.expiry is not None) == row["expiry_published"], row["tld"]


def _plan(domain: str) -> tuple[str | None, str | None]:
    async def run() -> tuple[str | None, str | None]:
        rdap = RdapClient(with_builtin_rdap(RdapSettings()))
        try:
            plan = plan_source(domain, rdap, WhoisClient(WhoisSettings()), None)
        finally:
            await rdap.aclose()
        return plan.source, plan.server

    return asyncio.run(run())


@pytest.mark.parametrize("row", rows(), ids=lambda r: str(r["tld"]))
def test_built_in_choice_without_configuration(row: dict[str, object]) -> None:
    """A new user's domain in this TLD, no rdap.servers / whois.servers: RDAP from the IANA
    bootstrap first, then the table's RDAP service, then the table's WHOIS server, else
    nothing (and then `check` says what to set)."""
    tld = str(row["tld"])
    source, server = _plan(f"example.{tld}")
    services = builtin_bootstrap().services
    if tld in services:
        assert (source, server) == ("rdap", next(u for u in services[tld] if u.startswith("https")))
    elif row["rdap"]:
        assert (source, server) == ("rdap", row["rdap"])
    elif row["whois"]:
        assert (source, server) == ("whois", f"whois://{row['whois']}")
    else:
        assert (source, server) == (None, None)


def test_configured_servers_win_over_the_table() -> None:
    async def run() -> tuple[object, object]:
        rdap = RdapClient(with_builtin_rdap(RdapSettings(servers={"ch": "https://rdap.test/"})))
        whois = WhoisClient(WhoisSettings(servers={"de": "whois.test:4343"}))
        try:
            return (
                plan_source("example.ch", rdap, whois, None).server,
                plan_source("example.de", rdap, whois, None).server,
            )
        finally:
            await rdap.aclose()

    assert asyncio.run(run()) == ("https://rdap.test/", "whois://whois.test:4343")


def test_operator_rate_limits_cap_the_configured_pace() -> None:
    client = WhoisClient(WhoisSettings(requests_per_second=5.0))
    eu = client.server_for("example.eu")
    de = client.server_for("example.de")
    assert eu is not None and de is not None
    assert client._pacer(eu).spacing == 4.0  # EURid: 15 queries / 60 s
    assert client._pacer(de).spacing == 0.2


def test_config_keeps_only_what_the_user_wrote() -> None:
    # The table is merged where RDAP is used, never into the parsed config.
    assert Config().rdap.servers == {}


def test_table_errors_are_caught() -> None:
    with pytest.raises(ValueError):
        parse_table({"tlds": [{"tld": "de", "operator": "x"}, {"tld": "de", "operator": "y"}]})
    assert builtin_table().lookup("example.co.jp") is builtin_table().rows["jp"]
