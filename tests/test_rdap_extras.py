"""RDAP parser extras seen in real registries (issue 10): a registrar known only by its handle
(CZ.NIC), registry-local registrar IDs that are not IANA IDs (AFNIC's "Registry Operations" 9999,
Norid's own IDs), and the `inactive` status (no delegation) reported by `check`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from exporter import report
from exporter.registration import Registration, parse_domain
from exporter.store import CheckState, DomainStatus, RdapResult

FIXTURES = Path(__file__).parent / "fixtures" / "rdap"


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return document


def test_registrar_known_only_by_its_handle() -> None:
    reg = parse_domain(load("cznic_example.cz.json"))
    assert reg.registrar == "REG-INTERNET-CZ"  # before: None, "unknown registrar"
    assert reg.registrar_iana_id is None


def test_registry_acting_as_registrar_is_no_iana_registrar() -> None:
    reg = parse_domain(load("afnic_afnic.fr.json"))
    assert reg.registrar == "Registry Operations"
    assert reg.registrar_iana_id is None  # publicIds "IANA Registrar ID" 9999: reserved


def test_a_real_iana_id_is_kept() -> None:
    assert parse_domain(load("afnic_lemonde.fr.json")).registrar_iana_id == "1251"
    assert parse_domain(load("markmonitor_google.com.json")).registrar_iana_id == "292"


def test_registry_local_ids_are_not_iana_ids() -> None:
    # Norid publishes its own registrar ID and an organisation number, no IANA ID.
    assert parse_domain(load("norid_norway.no.json")).registrar_iana_id is None
    # A variation of the real AFNIC object: its registry-local handle under a type that merely
    # mentions IANA (the old "contains 'iana'" test took it), and a non-numeric identifier.
    document = load("afnic_lemonde.fr.json")
    for kind, ident in (("Registry IANA-like ID", "1251"), ("IANA Registrar ID", "RAR24-FRNIC")):
        variant = copy.deepcopy(document)
        for entity in variant["entities"]:
            if "registrar" in entity.get("roles", []):
                entity["publicIds"] = [{"type": kind, "identifier": ident}]
        assert parse_domain(variant).registrar_iana_id is None, kind


def test_inactive_is_a_status_check_reports() -> None:
    reg = Registration(name="bare.cn", statuses=("inactive",), nameservers=None)
    status = DomainStatus(
        name="bare.cn",
        rdap=RdapResult(True, "whois://whois.cnnic.cn", reg, read_at=0.0, source="whois"),
        checks={"whois": CheckState(success=True, last_attempt=0.0, last_success=0.0)},
        registry_source="whois",
    )
    problems = report.problems(status, now=0.0)
    assert "inactive at the registry: no name servers, not delegated" in problems
    assert report.verdict(status, now=0.0) == "attention"
