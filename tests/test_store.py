"""StatusStore: sync on reload, atomic updates, and the --state.file round trip."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from exporter import statefile
from exporter.registration import ContactEmail, Registration
from exporter.store import (
    STATE_VERSION,
    CheckState,
    ContactVerdict,
    DnsResult,
    DomainStatus,
    EmailResult,
    RdapResult,
    StatusStore,
)
from tests.support.exporter_proc import ExporterProcess
from tests.support.rdapserver import RdapServer, Reply, make_domain, write_bootstrap, write_ca

SECRET = "secret@x.test"
REPO = Path(__file__).resolve().parent.parent

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
    rdap=RdapResult(
        registered=True,
        server="https://rdap.test/",
        registration=REGISTRATION,
        read_at=999.5,
        not_found_since=900.0,
    ),
    dns=DnsResult(
        parent_zone="com",
        parent=("ns1.example.net", "ns2.example.net"),
        child=("ns1.example.net",),
        delegated=True,
        lame={"ns1.example.net": None, "ns2.example.net": "timeout"},
        mismatch=True,
        inconsistent=True,
        disagree_since=1400.0,
        measured_at=1500.0,
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

    # What is deliberately not persisted: contact addresses (personal data).
    assert REGISTRATION.contacts[0].email == SECRET
    expected_reg = replace(
        REGISTRATION,
        contacts=(
            ContactEmail(role="registrant", kind="real"),
            ContactEmail(role="technical", kind="relay"),
        ),
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
    assert json.loads(text)["version"] == STATE_VERSION == 2
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


def test_one_corrupt_domain_does_not_spoil_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    _store(FULL, NOT_REGISTERED).save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["domains"]["example.com"]["checks"]["rdap"]["failures"] = "three"
    path.write_text(json.dumps(document), encoding="utf-8")
    store = _fresh_like(FULL, NOT_REGISTERED)
    assert store.load(path) == 1
    assert store.get("example.com") == replace(FULL, rdap=None, dns=None, email=None, checks={})
    assert store.get("gone.example") == NOT_REGISTERED
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "ignoring saved state of 1 domains: first domain=example.com "
        "error=checks.rdap.failures: expected a whole number, got 'three'"
    ]


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


# --- generic records, old files, hostile files (issue 8) ------------------------------------


def test_unknown_fields_are_ignored_and_missing_ones_take_defaults(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _store(FULL).save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    record = document["domains"]["example.com"]
    record["checks"]["rdap"]["from_a_newer_version"] = {"x": [1]}
    record["rdap"]["registration"]["also_new"] = 1
    record["future_result"] = None
    del record["dns"]["inconsistent"], record["dns"]["measured_at"]
    path.write_text(json.dumps(document), encoding="utf-8")
    store = _fresh_like(FULL)
    assert store.load(path) == 1
    got = store.get("example.com")
    assert got is not None and got.dns is not None and FULL.dns is not None
    assert got.dns == replace(FULL.dns, inconsistent=None, measured_at=None)
    assert got.checks == FULL.checks


def test_state_version_1_files_still_load() -> None:
    # Written by the version-1 code (e-mail verdicts as a bare list, fewer fields).
    store = _fresh_like(FULL, NOT_REGISTERED)
    assert store.load(REPO / "tests/testdata/state/state-v1.json") == 2
    assert FULL.rdap is not None and FULL.rdap.registration is not None and FULL.dns is not None
    v1_registration = replace(
        FULL.rdap.registration,
        contacts=(
            ContactEmail(role="registrant", kind="real"),
            ContactEmail(role="technical", kind="relay"),
        ),
        registrar_link=None,
        redacted=(),
        warnings=(),
    )
    assert store.get("example.com") == replace(
        FULL,
        rdap=RdapResult(registered=True, server="https://rdap.test/", registration=v1_registration),
        dns=replace(FULL.dns, inconsistent=None, disagree_since=None, measured_at=None),
    )
    assert store.get("gone.example") == NOT_REGISTERED


def test_stale_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _store(FULL).save(path)
    for name in (".domainwatch-x1y2z3.tmp", ".domainwatch-abcdefgh", ".domainwatch-probe-q"):
        (tmp_path / name).write_bytes(b'{"version": 2, "dom')  # a save cut short by kill -9
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / ".domainwatch-dir").mkdir()
    store = _fresh_like(FULL)
    assert store.load(path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".domainwatch-dir",
        "other.json",
        "state.json",
    ]
    # Also when there is no state file yet (first start after a crash during the first save).
    (tmp_path / ".domainwatch-late.tmp").write_bytes(b"")
    path.unlink()
    assert store.load(path) == 0
    assert not (tmp_path / ".domainwatch-late.tmp").exists()


def test_save_syncs_the_file_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    _store(FULL).save(tmp_path / "state.json")
    assert synced == ["file", "dir"]  # data first, then the rename


def test_a_failed_save_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    _store(NOT_REGISTERED).save(path)
    before = path.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _store(FULL).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"version": 2, "domains": {"gone.example": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"version": 2, "domains": {"gone.example": {"checks": {"rdap": {"failures": '
        + b"9" * 5000
        + b"}}}}}",
        b'{"version": 2, "domains": {"gone.example": {"checks": {"rdap": {"last_success": '
        + b"9" * 400
        + b"}}}}}",
        b'{"version": true, "domains": {}}',
        b'{"version": 2.0000001, "domains": {}}',
        b'{"version": 2, "domains": {"gone.example": {"checks": {"rdap": '
        b'{"success": true, "last_success": Infinity}}}}}',
        b'{"version": 2, "domains": {"gone.example": {"rdap": {"registered": 1, "server": null,'
        b' "registration": null}}}}',
        b'{"version": 2, "domains": {"gone.example": {"rdap": {"registered": true, "server": null,'
        b' "registration": {"name": "x", "expiry": "2030-02-31T00:00:00Z"}}}}}',
        b'{"version": 2, "domains": {"gone.example": {"dns": {"lame": []}}}}',
        b'{"version": 2, "domains": {"gone.example": {"email": {"verdicts": [{"role": 1}]}}}}',
        b"\xff\xfe\x00garbage",
        b"\x00" * 1000,
    ],
    ids=[
        "deep-100k",
        "deep-record",
        "5000-digits",
        "400-digit-float",
        "version-true",
        "version-float",
        "infinity",
        "int-for-bool",
        "bad-date",
        "list-for-map",
        "int-for-str",
        "utf16-garbage",
        "nuls",
    ],
)
def test_hostile_state_file_is_ignored_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = _store(NOT_REGISTERED)
    before = store.get("gone.example")
    assert store.load(path) == 0
    assert store.get("gone.example") == before
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "\n" not in warnings[0] and len(warnings[0]) < 400, warnings[0][:400]


def test_codec_never_writes_repr_false_fields() -> None:
    contact = ContactEmail(role="registrant", kind="real", email=SECRET)
    assert statefile.dump(contact) == {"role": "registrant", "kind": "real"}
    # ...and does not read one back from a file either.
    loaded = statefile.load_dataclass(
        ContactEmail, {"role": "registrant", "kind": "real", "email": SECRET}
    )
    assert loaded.email is None


# --- restored-state age limit (issue 7 item 6) --------------------------------------------

DAY = 86400.0
NOW = 30 * DAY


def _aged(rdap_age: float | None, dns_age: float | None, email_age: float | None) -> DomainStatus:
    def state(age: float | None) -> CheckState:
        last = None if age is None else NOW - age
        return CheckState(success=True, last_attempt=last, last_success=last, next_due=NOW + 60)

    return replace(
        FULL,
        checks={"rdap": state(rdap_age), "dns": state(dns_age), "email": state(email_age)},
    )


MAX_AGE = {"rdap": 12 * 3600.0, "dns": 600.0, "email": 7200.0}


def test_fresh_results_are_restored_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    status = _aged(3600, 60, 7199)
    _store(status).save(path)
    store = _fresh_like(status)
    assert store.load(path, max_age=MAX_AGE, now=NOW) == 1
    got = store.get("example.com")
    assert got is not None
    assert (got.rdap, got.dns, got.email, got.checks) == (
        _rdap_without_address(status),
        status.dns,
        status.email,
        status.checks,
    )


def test_results_older_than_max_age_are_dropped_and_rechecked(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    status = _aged(21 * DAY, 601, None)  # three weeks; just over; never succeeded
    _store(status).save(path)
    store = _fresh_like(status)
    assert store.load(path, max_age=MAX_AGE, now=NOW) == 1
    got = store.get("example.com")
    assert got is not None
    # The results go (their gauges are absent)...
    assert (got.rdap, got.dns, got.email) == (None, None, None)
    # ...the bookkeeping stays (age metrics), due at once.
    for kind in ("rdap", "dns", "email"):
        assert got.checks[kind] == replace(status.checks[kind], next_due=None), kind


def test_age_limit_is_per_check(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    status = _aged(21 * DAY, 60, 60)
    _store(status).save(path)
    store = _fresh_like(status)
    assert store.load(path, max_age={"rdap": 12 * 3600.0}, now=NOW) == 1
    got = store.get("example.com")
    assert got is not None
    assert got.rdap is None and got.checks["rdap"].next_due is None
    assert got.dns == status.dns and got.checks["dns"] == status.checks["dns"]
    assert got.email == status.email


def test_a_last_success_far_in_the_future_is_not_fresh(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    status = _aged(-21 * DAY, -60, 0)  # a clock that was weeks ahead; a minute is skew
    _store(status).save(path)
    store = _fresh_like(status)
    store.load(path, max_age=MAX_AGE, now=NOW)
    got = store.get("example.com")
    assert got is not None
    assert got.rdap is None
    assert got.dns == status.dns and got.email == status.email


def test_without_max_age_nothing_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    status = _aged(365 * DAY, 365 * DAY, 365 * DAY)
    _store(status).save(path)
    store = _fresh_like(status)
    assert store.load(path) == 1
    got = store.get("example.com")
    assert got is not None and got.rdap is not None and got.checks == status.checks


def _rdap_without_address(status: DomainStatus) -> RdapResult | None:
    if status.rdap is None or status.rdap.registration is None:
        return status.rdap
    reg = status.rdap.registration
    contacts = tuple(replace(c, email=None) for c in reg.contacts)
    return replace(status.rdap, registration=replace(reg, contacts=contacts))


# --- the age limit through the running exporter (issue 7 item 6) ---------------------------


def _exporter_config(tmp: Path) -> str:
    return f"""
rdap:
  bootstrap: {tmp / "bootstrap.json"}
  ca_file: {tmp / "ca.pem"}
  allow_private_addresses: true
  interval: 1h
  timeout: 5s
  requests_per_second: 50
dns:
  root_servers: ["127.83.0.1:9"]
  interval: 1h
  timeout: 0.2s
domains:
  - held.test
"""


def _held_state(path: Path, last_success: float) -> None:
    """A state file as the exporter writes it: held.test on client hold, read at last_success."""
    registration = Registration(
        name="held.test",
        expiry=datetime(2031, 1, 1, tzinfo=UTC),
        statuses=("client hold",),
        nameservers=("ns1.held.test",),
        registrar="Reg",
        registrar_iana_id="1",
    )
    status = DomainStatus(
        name="held.test",
        rdap=RdapResult(
            registered=True,
            server="https://127.0.0.1/",
            registration=registration,
            read_at=last_success,
        ),
        checks={
            "rdap": CheckState(
                success=True,
                last_attempt=last_success,
                last_success=last_success,
                next_due=time.time() + 3600,  # not due: only the age limit may re-check it
            )
        },
    )
    _store(status).save(path)


@pytest.mark.parametrize("age_days", [21.0, 0.01], ids=["three-weeks", "fresh"])
def test_exporter_does_not_export_an_old_restored_hold(tmp_path: Path, age_days: float) -> None:
    ca = trustme.CA()
    release = threading.Event()
    with RdapServer(ca) as registry:
        write_ca(ca, tmp_path / "ca.pem")
        write_bootstrap(tmp_path / "bootstrap.json", {"test": registry})
        expiry = datetime.now(UTC) + timedelta(days=300)
        registry.set_domain(
            "held.test",
            Reply(
                body=make_domain("held.test", expiry, ["active"], ["ns1.held.test"], "Reg", "1"),
                gate=release,  # the re-check lands only when the test says so
                gate_timeout=10,
            ),
        )
        config = tmp_path / "config.yaml"
        config.write_text(_exporter_config(tmp_path))
        state = tmp_path / "state.json"
        last_success = time.time() - age_days * 86400
        _held_state(state, last_success)
        with ExporterProcess(config, tmp_path / "run", state_file=state) as exporter:
            first = exporter.scrape()  # right after /-/ready
            lines = first.for_domain("held.test")
            age = first.value(
                "domain_check_last_success_timestamp_seconds", domain="held.test", check="rdap"
            )
            assert age == pytest.approx(last_success, abs=1), lines  # age metric stays
            if age_days > 1:
                assert first.value("domain_hold", domain="held.test") is None, lines
                assert first.value("domain_registered", domain="held.test") is None, lines
                # Re-checked at once, not after next_due an hour from now.
                registry.wait_for_request("held.test", timeout=10)
                release.set()
                exporter.wait_for(
                    lambda s: s.value("domain_hold", domain="held.test") == 0, timeout=10
                )
            else:
                assert first.value("domain_hold", domain="held.test") == 1, lines
                time.sleep(1.0)
                assert registry.requests_for("held.test") == []  # a fresh result counts
        release.set()
