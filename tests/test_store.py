"""StatusStore: sync on reload, atomic updates, and the --state.file round trip."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.registration import ContactEmail, Registration
from exporter.store import (
    CheckState,
    ContactVerdict,
    DnsResult,
    DomainStatus,
    EmailResult,
    RdapResult,
    StatusStore,
)

SECRET = "secret@x.test"

REGISTRATION = Registration(
    name="example.com",
    expiry=datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    registrar_expiry=datetime(2029, 12, 31, tzinfo=UTC),
    statuses=("client hold", "client transfer prohibited"),
    nameservers=("ns1.example.net", "ns2.example.net"),
    registrar="Example Registrar",
    registrar_iana_id="9999",
    contacts=(
        ContactEmail(role="registrant", kind="real", email=SECRET),
        ContactEmail(role="technical", kind="relay"),
    ),
    registrar_link="https://rdap.registrar.test/domain/example.com",
    redacted=("Registrant Name",),
    warnings=("expiration: something odd",),
)

FULL = DomainStatus(
    name="example.com",
    labels={"team": "web"},
    expected_nameservers=("ns1.example.net", "ns2.example.net"),
    rdap=RdapResult(registered=True, server="https://rdap.test/", registration=REGISTRATION),
    dns=DnsResult(
        parent_zone="com",
        parent=("ns1.example.net", "ns2.example.net"),
        child=("ns1.example.net",),
        delegated=True,
        lame={"ns1.example.net": None, "ns2.example.net": "timeout"},
        mismatch=True,
    ),
    email=EmailResult(
        (
            ContactVerdict(
                role="registrant",
                source="config",
                mail_domain="x.test",
                deliverable=True,
                reason="mx",
                self_hosted=False,
            ),
            ContactVerdict(
                role="technical",
                source="rdap",
                mail_domain="example.com",
                deliverable=None,
                reason="timeout",
                self_hosted=True,
            ),
        )
    ),
    checks={
        "rdap": CheckState(
            success=True, last_attempt=1000.0, last_success=1000.0, next_due=22600.0
        ),
        "dns": CheckState(
            success=False,
            last_attempt=2000.0,
            last_success=1500.0,
            error="timeout",
            failures=3,
            next_due=2060.0,
        ),
        "email": CheckState(success=None),
    },
)

NOT_REGISTERED = DomainStatus(
    name="gone.example",
    rdap=RdapResult(registered=False, server="https://rdap.test/", registration=None),
    checks={"rdap": CheckState(success=True, last_attempt=5.0, last_success=5.0)},
)


def _store(*statuses: DomainStatus) -> StatusStore:
    store = StatusStore()
    store.sync((s.name, s.labels, s.expected_nameservers) for s in statuses)
    for s in statuses:
        store.update(s.name, _replace_with(s))
    return store


def _fresh_like(*statuses: DomainStatus) -> StatusStore:
    store = StatusStore()
    store.sync((s.name, s.labels, s.expected_nameservers) for s in statuses)
    return store


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _store(FULL, NOT_REGISTERED).save(path)

    restored = _fresh_like(FULL, NOT_REGISTERED)
    assert restored.load(path) == 2

    # What is deliberately not persisted: addresses, and per-lookup details.
    assert REGISTRATION.contacts[0].email == SECRET
    expected_reg = replace(
        REGISTRATION,
        contacts=(
            ContactEmail(role="registrant", kind="real"),
            ContactEmail(role="technical", kind="relay"),
        ),
        registrar_link=None,
        redacted=(),
        warnings=(),
    )
    assert FULL.rdap is not None
    expected = replace(FULL, rdap=replace(FULL.rdap, registration=expected_reg))
    assert restored.get("example.com") == expected
    assert restored.get("gone.example") == NOT_REGISTERED
    got = restored.get("example.com")
    assert got is not None and got.rdap is not None and got.rdap.registration is not None
    assert got.rdap.registration.expiry is not None
    assert got.rdap.registration.expiry.tzinfo is UTC


def test_state_file_is_private_and_holds_no_address(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{}", encoding="utf-8")
    path.chmod(0o644)  # an existing, readable file is replaced, not reused
    _store(FULL).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    assert SECRET not in text
    assert "secret" not in text
    assert json.loads(text)["version"] == 1
    # The write is atomic: no temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_load_restores_only_configured_domains(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _store(FULL, NOT_REGISTERED).save(path)
    store = StatusStore()
    store.sync([("gone.example", {}, ()), ("new.example", {}, ())])
    assert store.load(path) == 1
    assert store.get("gone.example") == NOT_REGISTERED
    assert store.get("new.example") == DomainStatus(name="new.example")
    assert store.get("example.com") is None  # in the file, no longer configured


def test_load_keeps_current_labels(tmp_path: Path) -> None:
    # Labels and expected nameservers come from the config, not from the old state.
    path = tmp_path / "state.json"
    _store(FULL).save(path)
    store = StatusStore()
    store.sync([("example.com", {"team": "mail"}, ("ns9.example.net",))])
    assert store.load(path) == 1
    got = store.get("example.com")
    assert got is not None
    assert got.labels == {"team": "mail"}
    assert got.expected_nameservers == ("ns9.example.net",)
    assert got.checks == FULL.checks


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "[1, 2, 3]",
        '"a string"',
        '{"version": 2, "domains": {}}',
        '{"version": 1}',
        '{"version": 1, "domains": [1]}',
        "\udcff",
    ],
    ids=["empty", "garbage", "list", "string", "version", "no-domains", "domains-list", "bad-utf8"],
)
def test_corrupt_state_file_is_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    store = _store(NOT_REGISTERED)
    before = store.get("gone.example")
    assert store.load(path) == 0
    assert store.get("gone.example") == before


def test_one_corrupt_domain_does_not_spoil_the_others(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _store(FULL, NOT_REGISTERED).save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["domains"]["example.com"]["checks"]["rdap"]["bogus_field"] = 1
    path.write_text(json.dumps(document), encoding="utf-8")
    store = _fresh_like(FULL, NOT_REGISTERED)
    assert store.load(path) == 1
    assert store.get("example.com") == replace(FULL, rdap=None, dns=None, email=None, checks={})
    assert store.get("gone.example") == NOT_REGISTERED


def test_missing_state_file(tmp_path: Path) -> None:
    assert _store(FULL).load(tmp_path / "absent.json") == 0


def test_sync_drops_removed_and_keeps_results() -> None:
    store = _store(FULL, NOT_REGISTERED)
    generation = store.generation
    store.sync([("new.example", {}, ()), ("example.com", {"team": "ops"}, ())])
    assert store.generation > generation
    assert [s.name for s in store.snapshot()] == ["new.example", "example.com"]
    assert store.get("gone.example") is None
    kept = store.get("example.com")
    assert kept == replace(FULL, labels={"team": "ops"}, expected_nameservers=())
    assert store.get("new.example") == DomainStatus(name="new.example")


def test_update_of_a_removed_domain_is_ignored() -> None:
    store = _store(FULL)
    store.sync([])
    generation = store.generation
    store.update("example.com", lambda s: replace(s, labels={"x": "y"}))
    assert store.get("example.com") is None
    assert store.snapshot() == []
    assert store.generation == generation


def test_update_swaps_a_new_record() -> None:
    store = _fresh_like(NOT_REGISTERED)
    before = store.snapshot()
    store.update("gone.example", lambda s: replace(s, checks={"dns": CheckState(success=True)}))
    # An earlier snapshot is not mutated under a scrape's feet.
    assert before == [DomainStatus(name="gone.example")]
    got = store.get("gone.example")
    assert got is not None and got.check("dns").success is True
    assert got.check("email") == CheckState()


def _verdict(role: str, deliverable: bool | None) -> ContactVerdict:
    return ContactVerdict(
        role=role,
        source="config",
        mail_domain="x.test",
        deliverable=deliverable,
        reason="",
        self_hosted=False,
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([True], True),
        ([True, True], True),
        ([False], False),
        ([True, False], False),
        ([False, True], False),
        ([None, False], False),
        ([False, None], False),
        ([None], None),
        ([True, None], None),
        ([None, True], None),
    ],
)
def test_email_by_role(values: list[bool | None], expected: bool | None) -> None:
    result = EmailResult(tuple(_verdict("registrant", v) for v in values))
    assert result.by_role() == {"registrant": expected}


def _replace_with(status: DomainStatus) -> Callable[[DomainStatus], DomainStatus]:
    return lambda _old: status
