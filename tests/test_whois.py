"""WHOIS: the parser on real registry answers (tests/fixtures/whois, provenance in SOURCES.md) and
the transport against a real port-43 server on loopback (127.89.0.0/16): deadline, early close,
size cap, private-address refusal, per-server pacing observed at the server, query syntax."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime

import pytest

from exporter.cctlds import builtin_table
from exporter.config import WhoisSettings
from exporter.whois import (
    MAX_RESPONSE_BYTES,
    WhoisClient,
    WhoisParseError,
    is_rate_limit_notice,
    parse_date,
    parse_response,
    parse_server,
)
from tests.support.whoisserver import Reply, WhoisServer, fixture

HOST = "127.89.0.1"


def parse(name: str, domain: str) -> tuple[bool, object]:
    row = builtin_table().lookup(domain)
    text = fixture(name).decode("utf-8")
    return parse_response(domain, text, row.tz if row else UTC)


# (fixture, domain, expiry as UTC ISO or None, statuses, registrar, nameservers)
RECORDS = [
    # .jp general use, English (/e): [Expires on] in JST.
    ("jprs_meta.jp.txt", "meta.jp", "2024-07-30T15:00:00+00:00", ("active",), None,
     ("ns.meta.jp",)),
    # co.jp: no expiry field; the term ends on the date in [State] Connected (YYYY/MM/DD).
    ("jprs_yahoo.co.jp.txt", "yahoo.co.jp", "2025-09-29T15:00:00+00:00",
     ("agent change locked", "connected"), None,
     ("ns01.yahoo.co.jp", "ns02.yahoo.co.jp", "ns11.yahoo.co.jp", "ns12.yahoo.co.jp")),
    # .jp in Japanese (without /e): [有効期限], [状態], [ロック状態].
    ("jprs_google.jp.ja.txt", "google.jp", "2026-05-30T15:00:00+00:00",
     ("active", "agent change locked", "domain transfer locked"), None,
     ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com")),
    # DENIC publishes no expiry at all: expiry None, yet a record.
    ("denic_google.de.txt", "google.de", None, ("connect",), None,
     ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com")),
    # EURid: no expiry, registrar and name servers in blocks, one NS listed twice (v4/v6).
    ("eurid_eurid.eu.txt", "eurid.eu", None, (), "EURid vzw", ("ns1.eurid.eu", "nsp.netnod.se")),
    # SWITCH (old port-43 format): the domain name and name servers on the lines below.
    ("switch_google.ch.txt", "google.ch", None, (), None,
     ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com")),
    # CNNIC: EPP statuses, Beijing time without a zone.
    ("cnnic_google.cn.txt", "google.cn", "2023-03-17T04:48:36+00:00",
     ("client delete prohibited", "client transfer prohibited", "server delete prohibited",
      "server transfer prohibited", "server update prohibited"),
     "厦门易名科技股份有限公司",
     ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com")),
    # RIPN: paid-till, comma-separated state, name servers with addresses.
    ("tcinet_yandex.ru.txt", "yandex.ru", "2018-09-30T21:00:00+00:00",
     ("delegated", "registered", "verified"), "RU-CENTER-RU",
     ("ns1.yandex.ru", "ns2.yandex.ru", "ns9.z5h64q92x9.net")),
    # KISA: "key : value", Korean and English sections, "2026. 03. 02." in KST.
    ("kisa_google.kr.txt", "google.kr", "2026-03-01T15:00:00+00:00", (),
     "Whois Corp.(http://whois.co.kr)", ("ns1.google.com", "ns2.google.com")),
    # NIC.br: expires 20200518, contacts' created/changed after the domain's.
    ("nicbr_google.com.br.txt", "google.com.br", "2020-05-18T00:00:00+00:00", ("published",),
     None, ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com")),
    # .it: "Registrar" section (Organization, not the handle), "Nameservers" without a colon.
    ("nicit_google.it.txt", "google.it", "2019-04-20T23:00:00+00:00", ("active",),
     "MarkMonitor International Limited",
     ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com")),
    # .io (ICB's format before the Identity Digital back end): "Expiry : ", "NS 1   : ".
    ("nicio_redis.io.txt", "redis.io", "2014-05-28T00:00:00+00:00", ("live",), None,
     ("ns1.iwantmyname.net", "ns2.iwantmyname.net", "ns3.iwantmyname.net",
      "ns4.iwantmyname.net")),
    # ICANN-style (doMEn, Identity Digital's format, as .io's today): EPP URLs stripped.
    ("domen_google.me.txt", "google.me", "2021-06-13T17:17:40+00:00",
     ("client delete prohibited", "client transfer prohibited", "client update prohibited",
      "server delete prohibited", "server transfer prohibited", "server update prohibited"),
     "MarkMonitor Inc.",
     ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "domain", "expiry", "statuses", "registrar", "nameservers"), RECORDS
)
def test_real_records_parse(
    name: str,
    domain: str,
    expiry: str | None,
    statuses: tuple[str, ...],
    registrar: str | None,
    nameservers: tuple[str, ...],
) -> None:
    registered, reg = parse(name, domain)
    assert registered is True
    assert reg is not None
    assert (reg.expiry.isoformat() if reg.expiry else None) == expiry  # type: ignore[attr-defined]
    assert reg.statuses == statuses  # type: ignore[attr-defined]
    assert reg.registrar == registrar  # type: ignore[attr-defined]
    assert reg.nameservers == nameservers  # type: ignore[attr-defined]
    assert reg.warnings == ()  # type: ignore[attr-defined]


def test_iana_registrar_id_only_from_the_icann_field() -> None:
    _registered, reg = parse("domen_google.me.txt", "google.me")
    assert reg.registrar_iana_id == "292"  # type: ignore[attr-defined]
    _registered, reg = parse("nicit_google.it.txt", "google.it")
    assert reg.registrar_iana_id is None  # type: ignore[attr-defined]


NOT_FOUND = [
    ("jprs_not-found.txt", "nosuchname.jp"),  # "No match!!"
    ("denic_u34jedzcq.de.free.txt", "u34jedzcq.de"),  # "Status: free"
    ("switch_not-found.txt", "nosuch.ch"),  # "We do not have an entry in our database ..."
    ("cnnic_not-found.txt", "nosuch.cn"),  # "no matching record."
    ("tcinet_not-found.txt", "nosuch.ru"),  # "No entries found for the selected source(s)."
    ("kisa_u34jedzcq.kr.not-registered.txt", "u34jedzcq.kr"),  # "... is not registered ..."
    ("nicbr_u34jedzcq.br.no-match.txt", "u34jedzcq.com.br"),  # '% No match for domain "..."'
    ("nicit_u34jedzcq.it.available.txt", "u34jedzcq.it"),  # "Status: AVAILABLE"
]


@pytest.mark.parametrize(("name", "domain"), NOT_FOUND)
def test_registry_not_found_answers(name: str, domain: str) -> None:
    assert parse(name, domain) == (False, None)


def test_an_answer_about_another_name_is_refused() -> None:
    text = fixture("jprs_meta.jp.txt").decode()
    with pytest.raises(WhoisParseError, match=r"meta\.jp"):
        parse_response("other.jp", text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "% only a comment\n%\n",
        "[ JPRS database provides information on network administration. ]\n",
        "Requests of this client are not permitted. Please use https://www.nic.ch/whois/ for "
        "queries.\n",
    ],
)
def test_no_record_is_a_parse_error(text: str) -> None:
    with pytest.raises(WhoisParseError):
        parse_response("example.ch", text)


def test_rate_limit_notices() -> None:
    assert is_rate_limit_notice("% Error: 55000000002 Connection refused; access control limit")
    assert is_rate_limit_notice("Requests of this client are not permitted.")
    assert not is_rate_limit_notice(fixture("denic_google.de.txt").decode())


def test_dates() -> None:
    jst = builtin_table().rows["jp"].tz
    last_update = datetime(2025, 5, 31, 16, 5, 4, tzinfo=UTC)
    assert parse_date("2025/06/01 01:05:04 (JST)", jst) == last_update
    assert parse_date("2026. 03. 02.") == datetime(2026, 3, 2, tzinfo=UTC)
    assert parse_date("20200518") == datetime(2020, 5, 18, tzinfo=UTC)
    assert parse_date("2018-09-30T21:00:00Z") == datetime(2018, 9, 30, 21, tzinfo=UTC)
    assert parse_date("not a date") is None
    assert parse_date("9" * 400) is None


def test_servers() -> None:
    assert parse_server("whois.jprs.jp") == ("whois.jprs.jp", 43)
    assert parse_server("127.89.0.1:4343") == ("127.89.0.1", 4343)
    assert parse_server("[::1]:43") == ("::1", 43)
    for bad in ("whois.jprs.jp:0", "no spaces.jp", "localhost"):
        with pytest.raises(ValueError):
            parse_server(bad)


def test_configured_server_wins_and_keeps_the_registry_query_syntax() -> None:
    client = WhoisClient(WhoisSettings(servers={"jp": "127.89.0.1:4343"}))
    server = client.server_for("example.co.jp")
    assert server is not None
    assert (server.host, server.port, server.query) == ("127.89.0.1", 4343, "{domain}/e")
    assert server.url == "whois://127.89.0.1:4343"
    default = WhoisClient(WhoisSettings()).server_for("example.de")
    assert default is not None
    assert (default.host, default.port) == ("whois.denic.de", 43)
    assert default.query == "-T dn,ace -C UTF-8 {domain}"
    # Restricted (Red.es) and unknown TLDs: no server unless configured.
    assert WhoisClient(WhoisSettings()).server_for("example.es") is None
    assert WhoisClient(WhoisSettings()).server_for("example.zz") is None


# --- the transport, against a real server -----------------------------------------------


def client_for(server: WhoisServer, **kw: object) -> WhoisClient:
    settings = WhoisSettings(
        servers={"jp": server.address, "de": server.address},
        timeout=float(kw.pop("timeout", 1.0)),  # type: ignore[arg-type]
        requests_per_second=float(kw.pop("rps", 100.0)),  # type: ignore[arg-type]
        allow_private_addresses=bool(kw.pop("allow_private", True)),
    )
    return WhoisClient(settings)


def test_lookup_sends_the_registry_syntax_and_reads_the_record() -> None:
    with WhoisServer(HOST) as server:
        server.set("meta.jp", Reply(fixture("jprs_meta.jp.txt")))
        server.set("google.de", Reply(fixture("denic_google.de.txt")))
        client = client_for(server)

        async def both() -> tuple[object, object]:
            return await client.lookup("meta.jp"), await client.lookup("google.de")

        jp, de = asyncio.run(both())
        assert [q.line for q in server.queries()] == ["meta.jp/e", "-T dn,ace -C UTF-8 google.de"]
    assert jp.success and jp.registered is True  # type: ignore[attr-defined]
    assert jp.registration.expiry == datetime(2024, 7, 30, 15, tzinfo=UTC)  # type: ignore[attr-defined]
    assert de.success and de.registration.expiry is None  # type: ignore[attr-defined]


def test_a_dripping_server_fails_at_the_deadline() -> None:
    with WhoisServer(HOST) as server:
        server.set("meta.jp", Reply(fixture("jprs_meta.jp.txt"), drip=0.05))  # ~60 s in full
        client = client_for(server, timeout=0.5)
        started = time.monotonic()
        result = asyncio.run(client.lookup("meta.jp"))
        took = time.monotonic() - started
    assert result.error == "timeout", result
    assert 0.45 < took < 1.5


def test_a_server_that_closes_without_answering_is_a_clean_failure() -> None:
    with WhoisServer(HOST) as server:
        server.set("meta.jp", Reply(close_without_answer=True))
        result = asyncio.run(client_for(server).lookup("meta.jp"))
    assert (result.error, result.registered) == ("connection_error", None)
    assert "closed without an answer" in result.detail


def test_a_truncated_answer_is_invalid_not_a_record_of_nothing() -> None:
    body = fixture("jprs_meta.jp.txt")[:300]  # banner only: the server hung up early
    with WhoisServer(HOST) as server:
        server.set("meta.jp", Reply(body))
        result = asyncio.run(client_for(server).lookup("meta.jp"))
    assert result.error == "invalid_response", result


def test_an_oversized_answer_is_cut_off() -> None:
    body = b"% x\n" * (MAX_RESPONSE_BYTES // 4 + 10)
    with WhoisServer(HOST) as server:
        server.set("meta.jp", Reply(body))
        result = asyncio.run(client_for(server).lookup("meta.jp"))
    assert result.error == "invalid_response"
    assert "larger than" in result.detail


def test_private_addresses_are_refused_unless_allowed() -> None:
    with WhoisServer(HOST) as server:
        server.set("meta.jp", Reply(fixture("jprs_meta.jp.txt")))
        result = asyncio.run(client_for(server, allow_private=False).lookup("meta.jp"))
        assert result.error == "refused_address"
        assert server.queries() == []  # never connected


def test_pacing_per_server_is_observed_at_the_server() -> None:
    with WhoisServer(HOST) as server:
        names = [f"n{i}.jp" for i in range(5)]
        for name in names:
            server.set(name, Reply(fixture("jprs_not-found.txt")))
        client = client_for(server, rps=5.0)  # one query per 0.2 s

        async def all_at_once() -> list[object]:
            return list(await asyncio.gather(*(client.lookup(n) for n in names)))

        results = asyncio.run(all_at_once())
        arrivals = sorted(q.received for q in server.queries())
    assert all(r.registered is False for r in results)  # type: ignore[attr-defined]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 5
    assert min(gaps) >= 0.17, gaps  # 0.2 s spacing, minus scheduling jitter
