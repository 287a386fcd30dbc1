"""parse_domain() against every captured RDAP body in tests/fixtures/rdap/, plus the helpers.

The glob-parametrised test covers a new fixture automatically; the table below pins what each
known fixture is there to show (see tests/fixtures/rdap/SOURCES.md).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.names import normalise_host, to_alabel
from exporter.registration import (
    ContactEmail,
    InvalidResponse,
    Registration,
    classify_email,
    merge_registrar,
    normalise_status,
    parse_date,
    parse_domain,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rdap"
ALL = sorted(p.name for p in FIXTURES.glob("*.json"))
ERROR_BODIES = {
    "centralnic-error-404_jsiqpmcurt.design.json",
    "ripe-error-501_notimplemented.json",
}
KINDS = {"real", "relay", "web_form", "redacted", "absent"}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def parse(name: str) -> Registration:
    return parse_domain(load(name))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def roles(reg: Registration, kind: str) -> list[str]:
    return sorted(c.role for c in reg.contacts if c.kind == kind)


def test_fixture_set_is_there() -> None:
    assert len(ALL) >= 20
    assert set(ALL) >= ERROR_BODIES


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_parses_or_is_an_error_body(name: str) -> None:
    payload = load(name)
    if name in ERROR_BODIES or "errorCode" in payload:
        assert name in ERROR_BODIES, "a new error body: add it to ERROR_BODIES"
        with pytest.raises(InvalidResponse, match=r"RDAP error object \d+"):
            parse_domain(payload)
        return
    reg = parse_domain(payload)
    # Invariants that hold for any registry's answer:
    assert reg.name == to_alabel(reg.name)
    for ns in reg.nameservers or ():
        assert ns == normalise_host(ns)
        assert not ns.endswith(".")
        assert ns == ns.lower()
    assert list(reg.statuses) == sorted(set(reg.statuses))
    for status in reg.statuses:
        assert normalise_status(status) == status
    for value in (reg.expiry, reg.registrar_expiry):
        assert value is None or value.tzinfo is UTC
    for contact in reg.contacts:
        assert contact.kind in KINDS
        assert (contact.email is not None) == (contact.kind == "real")
        if contact.email:
            assert contact.email not in repr(reg)  # addresses never reach logs via repr


# Per-fixture facts. Values checked by hand against the JSON.
EXPECTED: dict[str, dict[str, Any]] = {
    "afnic_afnic.fr.json": {
        "name": "afnic.fr",
        "expiry": utc(2029, 7, 18, 8, 26, 59),
        "statuses": ("active",),
        "nameservers": ("ns1.nic.fr", "ns2.nic.fr", "ns3.nic.fr"),
        "registrar": "Registry Operations",
        # 9999: IANA's "Registry Operator acts as Registrar", no registrar's ID (issue 10)
        "registrar_iana_id": None,
        "registrar_link": None,
    },
    "afnic_lemonde.fr.json": {
        "expiry": utc(2025, 6, 9, 22, 8, 9),
        # AFNIC's own status is kept verbatim next to the RFC 8056 ones.
        "statuses": (
            "server delete prohibited",
            "server recover prohibited",
            "server transfer prohibited",
            "server update prohibited",
        ),
        "registrar": "NAMESHIELD",
        "registrar_iana_id": "1251",
    },
    "comlaude_amazon.cyou.json": {
        "name": "amazon.cyou",  # ldhName had a trailing dot
        "expiry": utc(2021, 5, 14),
        "statuses": ("client delete prohibited", "client update prohibited"),
        "nameservers": ("nsgbr.comlaude.co.uk", "nssui.comlaude.ch", "nsusa.comlaude.net"),
        "registrar": "NOM-IQ Ltd dba Com Laude",
        "registrar_iana_id": "470",
    },
    "cznic_example.cz.json": {
        "expiry": utc(2019, 8, 30, 12),
        "statuses": ("active",),
        "nameservers": ("ns.pipni.cz", "ns2.pipni.cz", "ns3.pipni.cz"),
        "registrar": "REG-INTERNET-CZ",  # no vCard: the handle is all CZ.NIC gives (issue 10)
        "registrar_iana_id": None,
    },
    "fir-flexireg_home.moscow.json": {
        "expiry": utc(2024, 10, 19, 19, 28, 12),
        "statuses": ("client transfer prohibited",),
        "nameservers": ("ns1.reg.ru", "ns2.reg.ru"),
        "registrar_iana_id": "1606",
        "warnings": (),
    },
    "markmonitor_google.com.json": {
        "expiry": utc(2028, 9, 13, 7),  # "+0000" without a colon
        "registrar": "MarkMonitor Inc.",  # from vCard "org" (no "fn")
        "registrar_iana_id": "292",
        "nameservers": ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com"),
        "warnings": (),
    },
    "namecheap_bitcoin.org.json": {
        "expiry": utc(2029, 8, 18, 13, 19, 55),
        "warnings": ("expiration: date without time zone '2029-08-18T13:19:55', assumed UTC",),
        "statuses": ("client transfer prohibited",),
        "nameservers": ("dns1.registrar-servers.com", "dns2.registrar-servers.com"),
        "registrar": "NAMECHEAP INC",
        "registrar_iana_id": None,
    },
    "nic-example-idn_xn--fo-5ja.example.json": {
        "name": "xn--fo-5ja.example",
        "expiry": utc(2016, 12, 31, 23, 59, 59),
        "statuses": ("locked", "transfer prohibited"),
    },
    "nictube_you.tube.json": {
        "expiry": utc(2022, 4, 16, 23, 59, 59),
        "registrar": "MarkMonitor, Inc.",
        "registrar_iana_id": "292",
        "registrar_link": "https://rdap.markmonitor.com/rdap/domain/you.tube",
    },
    "nomulus-google-registry_redemption.lol.json": {
        "expiry": None,  # year 294247 cannot be a datetime: unknown, not a crash
        "warnings": ("expiration: unreadable date '294247-01-10T04:00:54.775Z'",),
        "statuses": ("pending delete", "redemption period"),
        "nameservers": ("ns1.cat.lol",),
        "registrar": "The Registrar",
        "registrar_iana_id": "1",
    },
    "norid_norway.no.json": {
        "expiry": None,
        "statuses": (),
        "warnings": (),
        "registrar": "Domeneshop AS",
        "registrar_iana_id": None,  # Norid IDs are not IANA IDs
    },
    "registrar-profile1-redacted_nomeo.com.json": {
        "expiry": utc(2026, 10, 10, 1, 55, 12),
        "statuses": ("active",),
        "nameservers": ("ns53.be",),
        "registrar": "Nomeo BV",
        "registrar_iana_id": "4148",
    },
    "rfc9537-redacted_example.com.json": {
        "expiry": utc(2021, 6, 3, 4),
        "registrar": "Example Registrar Inc.",
        "registrar_iana_id": "1",
    },
    "uniregistry_microsoft.click.json": {
        "expiry": utc(2024, 11, 12, 19, 15, 55, 283000),
        "registrar": "MarkMonitor Inc.",
        "registrar_iana_id": None,
        "registrar_link": None,
    },
    "verisign-thin_google.com.json": {
        "expiry": utc(2028, 9, 14, 4),
        "nameservers": ("ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com"),
        "registrar": "MarkMonitor Inc.",
        "registrar_iana_id": "292",
        "registrar_link": "https://rdap.markmonitor.com/rdap/domain/GOOGLE.COM",
        "contacts": (),
    },
    "verisign-thin_hhgames.com.json": {
        "expiry": utc(2026, 7, 4, 19, 21, 2),
        "statuses": (
            "client delete prohibited",
            "client transfer prohibited",
            "client update prohibited",
        ),
        "registrar": "Sea Wasp, LLC",
        "registrar_iana_id": "411",
        "registrar_link": "https://rdap.fabulous.com/rdap/domain/HHGAMES.COM",
        "contacts": (),
    },
    "verisign-thin_themarquetry.com.json": {
        "expiry": utc(2022, 3, 16, 17, 7, 37),
        "registrar_iana_id": "1647",
        "registrar_link": "https://rdap.registrar.eu/v1/domain/THEMARQUETRY.COM",
        "nameservers": ("ns1.dns-parking.com", "ns2.dns-parking.com"),
    },
    "zdns_bitcoin.top.json": {
        "name": "bitcoin.top",
        "expiry": utc(2021, 11, 17, 16, 0, 29),
        "nameservers": ("ns1.72dns.com", "ns2.idc1.cn"),
        "registrar": "成都西维数码科技有限公司",
        "registrar_iana_id": "1556",
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_facts(name: str) -> None:
    reg = parse(name)
    for field, value in EXPECTED[name].items():
        assert getattr(reg, field) == value, field


def test_expiry_is_utc() -> None:
    # Stored as UTC whatever offset the registry used.
    for name in ("markmonitor_google.com.json", "namecheap_bitcoin.org.json"):
        expiry = parse(name).expiry
        assert expiry is not None
        assert expiry.tzinfo is UTC


def test_contact_kinds() -> None:
    whoisguard = parse("namecheap_bitcoin.org.json")  # roles spelled "Registrant" etc.
    assert roles(whoisguard, "relay") == ["administrative", "registrant", "technical"]
    assert all(c.email is None for c in whoisguard.contacts)

    anonymised = parse("comlaude_amazon.cyou.json")
    assert roles(anonymised, "relay") == ["administrative", "registrant", "technical"]

    nomeo = parse("registrar-profile1-redacted_nomeo.com.json")
    assert roles(nomeo, "web_form") == ["administrative", "billing", "registrant", "technical"]

    redacted = parse("rfc9537-redacted_example.com.json")
    assert roles(redacted, "redacted") == ["registrant", "technical"]
    assert "Registrant Email" in redacted.redacted
    assert "Technical Email" in redacted.redacted

    afnic = parse("afnic_afnic.fr.json")
    assert roles(afnic, "real") == ["administrative", "registrant", "technical", "technical"]
    assert {c.role: c.email for c in afnic.contacts if c.role != "technical"} == {
        "registrant": "contact@nic.fr",
        "administrative": "david.chansard@nic.fr",
    }

    # One entity carrying three roles yields one contact per role.
    zdns = parse("zdns_bitcoin.top.json")
    assert roles(zdns, "redacted") == ["administrative", "registrant", "technical"]

    # Thin registry: no contacts at all (they live at the registrar).
    assert parse("verisign-thin_google.com.json").contacts == ()


def test_registrar_entity_contacts_are_not_registrant_contacts() -> None:
    # The registrar's and abuse desk's own mailboxes must not be judged as the holder's.
    lemonde = parse("afnic_lemonde.fr.json")
    assert "registrar@nameshield.net" not in {c.email for c in lemonde.contacts}
    assert {c.role for c in lemonde.contacts} == {"administrative", "registrant", "technical"}


def test_nomulus_dying_not_held() -> None:
    reg = parse("nomulus-google-registry_redemption.lol.json")
    assert reg.dying
    assert not reg.on_hold


def test_norid_has_no_statuses_and_no_expiry() -> None:
    reg = parse("norid_norway.no.json")
    assert reg.statuses == ()
    assert reg.expiry is None
    assert not reg.on_hold
    assert not reg.dying


def test_moscow_mixed_offsets() -> None:
    payload = load("fir-flexireg_home.moscow.json")
    offsets = {e["eventDate"][-6:] for e in payload["events"]}
    assert "+03:00" in offsets  # the fixture still shows what it is there for
    assert parse_domain(payload).expiry == utc(2024, 10, 19, 19, 28, 12)
    # The +03:00 date is converted, not read as UTC.
    assert parse_date("2024-06-18T22:01:39+03:00") == (utc(2024, 6, 18, 19, 1, 39), None)


def test_latest_expiration_event_wins() -> None:
    payload = load("verisign-thin_hhgames.com.json")
    payload["events"].append({"eventAction": "Expiration", "eventDate": "2030-01-01T00:00:00Z"})
    payload["events"].append({"eventAction": "expiration", "eventDate": "not a date"})
    reg = parse_domain(payload)
    assert reg.expiry == utc(2030, 1, 1)
    assert reg.warnings == ("expiration: unreadable date 'not a date'",)


@pytest.mark.parametrize(
    ("status", "held"),
    [
        ("client hold", True),
        ("server hold", True),
        ("clientHold", True),
        ("serverHold https://icann.org/epp#serverHold", True),
        ("client transfer prohibited", False),
        ("inactive", False),
    ],
)
def test_hold_from_status(status: str, held: bool) -> None:
    payload = copy.deepcopy(load("verisign-thin_hhgames.com.json"))
    payload["status"] = [status, "client update prohibited"]
    reg = parse_domain(payload)
    assert reg.on_hold is held
    assert "client update prohibited" in reg.statuses


# --- helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("clientHold", "client hold"),
        ("CLIENT HOLD", "client hold"),
        ("  Client   Hold ", "client hold"),
        ("client_hold", "client hold"),
        ("clientHold https://icann.org/epp#clientHold", "client hold"),
        ("serverTransferProhibited", "server transfer prohibited"),
        ("pendingDelete", "pending delete"),
        ("redemptionPeriod", "redemption period"),
        ("autoRenewPeriod", "auto renew period"),
        ("server recover prohibited", "server recover prohibited"),  # AFNIC, verbatim
        ("active", "active"),
    ],
)
def test_normalise_status(raw: str, expected: str) -> None:
    assert normalise_status(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ok", "active"), ("ok https://icann.org/epp#ok", "active"), ("linked", "associated")],
)
def test_normalise_status_maps_epp_ok(raw: str, expected: str) -> None:
    assert normalise_status(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-05-14T00:00:00Z", (utc(2021, 5, 14), None)),
        ("2021-11-17T16:00:29.0Z", (utc(2021, 11, 17, 16, 0, 29), None)),
        ("2028-09-13T07:00:00.000+0000", (utc(2028, 9, 13, 7), None)),
        ("2019-08-30T12:00:00+00:00", (utc(2019, 8, 30, 12), None)),
        ("2024-06-18T22:01:39+03:00", (utc(2024, 6, 18, 19, 1, 39), None)),
        ("2024-01-01T00:30:00-05:30", (utc(2024, 1, 1, 6), None)),
        (
            "2029-08-18T13:19:55",
            (
                utc(2029, 8, 18, 13, 19, 55),
                "date without time zone '2029-08-18T13:19:55', assumed UTC",
            ),
        ),
        ("294247-01-10T04:00:54.775Z", (None, "unreadable date '294247-01-10T04:00:54.775Z'")),
        ("yesterday", (None, "unreadable date 'yesterday'")),
        ("", (None, "empty date")),
        (None, (None, "empty date")),
        (20210514, (None, "empty date")),
    ],
)
def test_parse_date(raw: object, expected: tuple[datetime | None, str | None]) -> None:
    value, warning = parse_date(raw)
    assert (value, warning) == expected
    if value is not None:
        assert value.tzinfo is UTC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hostmaster@example.org", ("real", "hostmaster@example.org")),
        ("mailto:Hostmaster@Example.org", ("real", "Hostmaster@Example.org")),
        (" hostmaster@example.org ", ("real", "hostmaster@example.org")),
        ("x.protect@whoisguard.com", ("relay", None)),
        ("a@anonymised.email", ("relay", None)),
        ("a@mail.withheldforprivacy.com", ("relay", None)),  # relay subdomain
        ("a@notwhoisguard.com", ("real", "a@notwhoisguard.com")),  # suffix on a label boundary
        ("Please query the RDDS service of the Registrar of Record", ("redacted", None)),
        ("REDACTED FOR PRIVACY", ("redacted", None)),
        ("user@localhost", ("redacted", None)),  # no dot: not a deliverable address
        ("", ("redacted", None)),
        ("mailto:", ("redacted", None)),
        (None, ("absent", None)),
        (["a@b.example"], ("absent", None)),
    ],
)
def test_classify_email(raw: object, expected: tuple[str, str | None]) -> None:
    assert classify_email(raw) == expected


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([], "not a JSON object"),
        ("domain", "not a JSON object"),
        ({"errorCode": 404, "title": "Not Found"}, "RDAP error object 404"),
        ({"objectClassName": "nameserver", "ldhName": "ns1.example.com"}, "objectClassName"),
        ({"objectClassName": "domain"}, "no usable ldhName"),
        ({"objectClassName": "domain", "ldhName": "not a name"}, "no usable ldhName"),
    ],
)
def test_not_a_domain_object(payload: object, match: str) -> None:
    with pytest.raises(InvalidResponse, match=match):
        parse_domain(payload)


def test_unicode_name_is_used_when_ldh_name_is_missing() -> None:
    reg = parse_domain({"objectClassName": "domain", "unicodeName": "fóo.example"})
    assert reg.name == "xn--fo-5ja.example"
    assert reg.nameservers is None  # "not listed" differs from "empty"
    assert reg.statuses == ()


def test_garbage_fields_become_unknown() -> None:
    reg = parse_domain(
        {
            "objectClassName": "domain",
            "ldhName": "EXAMPLE.COM",
            "status": "active",  # not a list
            "events": {"expiration": "2030-01-01"},  # not a list
            "nameservers": [{"ldhName": "bad name"}, {"ldhName": "NS1.Example.COM."}, 5],
            "entities": [{"roles": "registrar"}, "x", {"roles": ["registrant"], "vcardArray": 3}],
            "links": "none",
        }
    )
    assert reg.name == "example.com"
    assert reg.statuses == ()
    assert reg.expiry is None
    assert reg.nameservers == ("ns1.example.com",)
    assert reg.registrar is None
    assert reg.contacts == (ContactEmail(role="registrant", kind="redacted"),)
    assert reg.registrar_link is None


# --- merge_registrar -------------------------------------------------------------------


def test_merge_thin_registry_with_registrar() -> None:
    registry = parse("verisign-thin_google.com.json")
    registrar = parse("markmonitor_google.com.json")
    merged = merge_registrar(registry, registrar)
    assert merged.expiry == utc(2028, 9, 14, 4)  # the registry's date wins
    assert merged.registrar_expiry == utc(2028, 9, 13, 7)  # the registrar's is kept apart
    assert merged.statuses == registry.statuses
    assert merged.nameservers == registry.nameservers
    assert merged.registrar == "MarkMonitor Inc."
    assert merged.registrar_iana_id == "292"
    assert merged.registrar_link == registry.registrar_link
    # The registry had no contacts: the registrar's fill every role.
    assert roles(merged, "redacted") == ["administrative", "registrant", "technical"]


def _reg(**kw: Any) -> Registration:
    return Registration(name="example.com", **kw)


def test_merge_registry_wins_on_conflicts() -> None:
    registry = _reg(
        expiry=None,
        statuses=(),
        nameservers=None,
        registrar=None,
        contacts=(
            ContactEmail(role="registrant", kind="real", email="owner@registry.test"),
            ContactEmail(role="technical", kind="redacted"),
            ContactEmail(role="administrative", kind="web_form"),
        ),
        redacted=("Registrant Name",),
        warnings=("expiration: empty date",),
    )
    registrar = _reg(
        expiry=utc(2030, 1, 1),
        registrar_expiry=utc(2031, 1, 1),
        statuses=("client hold",),
        nameservers=("ns1.registrar.test",),
        registrar="Registrar Ltd",
        registrar_iana_id="9",
        contacts=(
            ContactEmail(role="registrant", kind="real", email="other@registrar.test"),
            ContactEmail(role="technical", kind="real", email="tech@registrar.test"),
            ContactEmail(role="billing", kind="relay"),
        ),
        redacted=("Tech Email", "Registrant Name"),
        warnings=("expiration: date without time zone 'x', assumed UTC",),
    )
    merged = merge_registrar(registry, registrar)
    assert merged.expiry is None  # never taken from the registrar
    assert merged.registrar_expiry == utc(2031, 1, 1)  # its explicit registrar expiration
    assert merged.statuses == ()  # the registry's (empty) list stands
    assert merged.nameservers == ("ns1.registrar.test",)  # registry listed none at all
    assert merged.registrar == "Registrar Ltd"
    assert merged.registrar_iana_id == "9"
    by_role = {(c.role, c.kind, c.email) for c in merged.contacts}
    assert by_role == {
        ("registrant", "real", "owner@registry.test"),  # registry's real address stays
        ("technical", "real", "tech@registrar.test"),  # registrar fills a redacted role
        ("administrative", "web_form", None),  # the registrar said nothing about it
        ("billing", "relay", None),  # a role only the registrar has
    }
    assert merged.redacted == ("Registrant Name", "Tech Email")
    assert merged.warnings == (
        "expiration: empty date",
        "registrar: expiration: date without time zone 'x', assumed UTC",
    )


def test_merge_registrar_expiry_falls_back_to_its_expiration() -> None:
    merged = merge_registrar(_reg(expiry=utc(2030, 1, 1)), _reg(expiry=utc(2029, 6, 1)))
    assert merged.expiry == utc(2030, 1, 1)
    assert merged.registrar_expiry == utc(2029, 6, 1)


def test_merge_keeps_registry_nameservers_even_if_empty() -> None:
    merged = merge_registrar(_reg(nameservers=()), _reg(nameservers=("ns1.registrar.test",)))
    assert merged.nameservers == ()
