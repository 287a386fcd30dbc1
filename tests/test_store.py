"""StatusStore: sync on reload, atomic updates, and the --state.file database round trip."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from exporter import statedb, statefile
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


def _rows(path: Path) -> dict[str, dict[str, object]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {n: json.loads(d) for n, d in conn.execute("SELECT name, data FROM domains")}


def _edit_record(path: Path, name: str, edit: Callable[[dict[str, object]], object]) -> None:
    """Change one domain's saved record in place, as damage or a newer version would."""
    conn = sqlite3.connect(path)
    try:
        (data,) = conn.execute("SELECT data FROM domains WHERE name = ?", (name,)).fetchone()
        record = json.loads(data)
        edited = edit(record)
        record = record if edited is None else edited
        with conn:
            conn.execute(
                "UPDATE domains SET data = ? WHERE name = ?", (json.dumps(record).encode(), name)
            )
    finally:
        conn.close()


def _legacy_json(path: Path, *statuses: DomainStatus) -> None:
    """A state file exactly as the JSON-file versions of the exporter wrote it."""
    document = {
        "version": 2,
        "domains": {
            s.name: {
                k: statefile.dump(v)
                for k, v in ((f.name, getattr(s, f.name)) for f in fields(s))
                if k not in ("name", "labels", "expected_nameservers")
            }
            for s in statuses
        },
    }
    path.write_bytes(json.dumps(document, separators=(",", ":")).encode())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


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
    path = tmp_path / "state.db"
    old_umask = os.umask(0o022)
    try:
        _store(FULL).save(path)
        # While another connection holds the database open, the WAL and its index stay: both
        # must be as private as the database itself.
        reader = sqlite3.connect(path)
        reader.execute("SELECT count(*) FROM domains").fetchone()
        try:
            _store(FULL, NOT_REGISTERED).save(path)
            files = sorted(p.name for p in tmp_path.iterdir())
            assert files == ["state.db", "state.db-shm", "state.db-wal"]
            for name in files:
                assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
            data = b"".join((tmp_path / name).read_bytes() for name in files)
        finally:
            reader.close()
        # An existing database made readable by someone else becomes private again.
        path.chmod(0o644)
        _store(NOT_REGISTERED).save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old_umask)
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    assert b"example.com" in data  # the search below searches real content
    assert SECRET.encode() not in data
    assert b"secret" not in data + path.read_bytes()
    # The last connection's close checkpoints the WAL: nothing but the database remains.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_database_is_wal_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _store(FULL).save(path)
    header = path.read_bytes()[:100]
    assert header[18:20] == b"\x02\x02"  # file format versions 2: WAL mode, persistent
    conn = statedb._open(path)  # the one place connections are configured
    try:
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # in the file
    finally:
        conn.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["schema"] == statedb.SCHEMA_VERSION
    assert meta["record_version"] == STATE_VERSION == 2
    assert meta["saves"] == 1


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
    path = tmp_path / "state.db"
    _store(FULL, NOT_REGISTERED).save(path)

    def three(record: dict[str, object]) -> None:
        record["checks"]["rdap"]["failures"] = "three"  # type: ignore[index]

    _edit_record(path, "example.com", three)
    store = _fresh_like(FULL, NOT_REGISTERED)
    assert store.load(path) == 1
    assert store.get("example.com") == replace(FULL, rdap=None, dns=None, email=None, checks={})
    assert store.get("gone.example") == NOT_REGISTERED
    assert _warnings(caplog) == [
        "ignoring saved state of 1 domains: first domain=example.com "
        "error=checks.rdap.failures: expected a whole number, got 'three'"
    ]
    # The bad row is rewritten at the next save (with what the store holds now).
    assert store.save(path) == 1
    rewritten = _rows(path)["example.com"]
    assert not {"rdap", "dns", "email", "checks"} & set(rewritten), rewritten  # defaults: omitted


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
    path = tmp_path / "state.db"
    _store(FULL).save(path)

    def newer(record: dict[str, object]) -> None:
        record["checks"]["rdap"]["from_a_newer_version"] = {"x": [1]}  # type: ignore[index]
        record["rdap"]["registration"]["also_new"] = 1  # type: ignore[index]
        record["future_result"] = None
        del record["dns"]["inconsistent"], record["dns"]["measured_at"]  # type: ignore[attr-defined]

    _edit_record(path, "example.com", newer)
    store = _fresh_like(FULL)
    assert store.load(path) == 1
    got = store.get("example.com")
    assert got is not None and got.dns is not None and FULL.dns is not None
    assert got.dns == replace(FULL.dns, inconsistent=None, measured_at=None)
    assert got.checks == FULL.checks


def test_state_version_1_files_still_load(tmp_path: Path) -> None:
    # Written by the version-1 code (e-mail verdicts as a bare list, fewer fields); converted
    # to a database in place, so a copy.
    path = tmp_path / "state.json"
    shutil.copy(REPO / "tests/testdata/state/state-v1.json", path)
    store = _fresh_like(FULL, NOT_REGISTERED)
    assert store.load(path) == 2
    assert statedb.sniff(path) == "sqlite"
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
        (tmp_path / name).write_bytes(b'{"version": 2, "dom')  # JSON-era saves cut short
    # A conversion of a JSON file cut short by kill -9.
    (tmp_path / "state.json.tmp-sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 500)
    (tmp_path / "state.json.tmp-sqlite-journal").write_bytes(b"\x00" * 100)
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


def test_a_failed_save_keeps_the_old_rows_and_retries_the_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    store = _store(FULL, NOT_REGISTERED)
    store.save(path)
    before = _rows(path)
    changed = replace(NOT_REGISTERED, checks={"rdap": CheckState(success=False, failures=7)})
    store.update("gone.example", _replace_with(changed))
    # Another process holds the write lock (a second exporter on the same file, a backup).
    monkeypatch.setattr(statedb, "BUSY_TIMEOUT", 0.1)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OSError, match="locked"):
            store.save(path)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert _rows(path) == before  # untouched, and not moved aside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
    # The change was not forgotten: the next save writes it.
    assert store.save(path) == 1
    restored = _fresh_like(FULL, NOT_REGISTERED)
    assert restored.load(path) == 2
    assert restored.get("gone.example") == changed


def test_a_save_that_fails_half_way_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    names = [f"d{i:04d}.example" for i in range(3000)]
    store = StatusStore()
    store.sync((n, {}, ()) for n in names)
    for n in names:
        store.update(n, lambda s: replace(s, checks={"rdap": CheckState(failures=1)}))
    store.save(path)
    for n in names:
        store.update(n, lambda s: replace(s, checks={"rdap": CheckState(failures=2)}))
    real = statefile.encode_json
    calls = 0

    def failing(value: object) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2500:  # past the first batches the transaction already holds
            raise statefile.StateError("cannot save a Gremlin")
        return real(value)

    monkeypatch.setattr(statefile, "encode_json", failing)
    with pytest.raises(OSError, match="Gremlin"):
        store.save(path)
    assert {r["checks"]["rdap"]["failures"] for r in _rows(path).values()} == {1}  # type: ignore[index]
    monkeypatch.setattr(statefile, "encode_json", real)
    assert store.save(path) == len(names)
    assert {r["checks"]["rdap"]["failures"] for r in _rows(path).values()} == {2}  # type: ignore[index]


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
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "\n" not in warnings[0] and len(warnings[0]) < 400, warnings[0][:400]
    if path.exists():  # a legacy file with bad records: converted, its good records kept
        assert statedb.sniff(path) == "sqlite"
    else:  # unreadable as a whole: kept, byte for byte, beside a fresh database
        (moved,) = tmp_path.glob("state.json.corrupt-*")
        assert moved.read_bytes() == content
        assert "moved_to=" in warnings[0]
    store.save(path)
    assert _fresh_like(NOT_REGISTERED).load(path) == 1


def test_codec_leaves_out_default_none_and_empty_fields() -> None:
    # They read back as their defaults; a quarter of a populated record is such fields.
    assert statefile.dump(Registration(name="x")) == {"name": "x"}
    # ...but only the default: an empty tuple where the default is None says something else
    # ("the response lists no nameservers" is not "it does not say").
    bare = Registration(name="x", nameservers=(), statuses=("active",), expiry=None)
    assert statefile.dump(bare) == {"name": "x", "nameservers": [], "statuses": ["active"]}
    assert statefile.load_dataclass(Registration, statefile.dump(bare)) == bare
    assert statefile.dump(CheckState()) == {"failures": 0}


def test_codec_never_writes_repr_false_fields() -> None:
    contact = ContactEmail(role="registrant", kind="real", email=SECRET)
    assert statefile.dump(contact) == {"role": "registrant", "kind": "real"}
    # ...and does not read one back from a file either.
    loaded = statefile.load_dataclass(
        ContactEmail, {"role": "registrant", "kind": "real", "email": SECRET}
    )
    assert loaded.email is None


# --- the state database: writes follow the changes (issue 9) --------------------------------


def _updated(path: Path) -> dict[str, float]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT name, updated_at FROM domains"))


def _many(count: int) -> StatusStore:
    store = StatusStore()
    store.sync((f"d{i:04d}.example", {}, ()) for i in range(count))
    for status in store.snapshot():
        store.update(status.name, lambda s: replace(s, checks={"rdap": CheckState(failures=1)}))
    return store


def test_a_save_after_one_change_writes_one_row(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = _many(500)
    assert store.save(path) == 500  # the first save writes everything
    first = _updated(path)
    assert store.save(path) == 0  # nothing changed: no transaction at all
    assert _updated(path) == first
    time.sleep(0.01)  # updated_at must be able to differ
    store.update("d0042.example", lambda s: replace(s, checks={"rdap": CheckState(failures=2)}))
    assert store.save(path) == 1
    after = _updated(path)
    assert [n for n in after if after[n] != first[n]] == ["d0042.example"]
    assert _rows(path)["d0042.example"]["checks"]["rdap"]["failures"] == 2  # type: ignore[index]
    # A reload that drops domains deletes exactly their rows.
    store.sync((f"d{i:04d}.example", {}, ()) for i in range(2, 500))
    assert store.save(path) == 2
    assert len(_rows(path)) == 498 and "d0001.example" not in _rows(path)
    # Labels are config, not state: a reload that only relabels writes nothing.
    store.sync((f"d{i:04d}.example", {"team": "x"}, ()) for i in range(2, 500))
    assert store.save(path) == 0


def test_a_restart_does_not_rewrite_what_it_restored(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _many(300).save(path)
    store = StatusStore()
    # d0000..d0009 left the config while the exporter was down; d9999 is new.
    kept = [(f"d{i:04d}.example", {}, ()) for i in range(10, 300)]
    store.sync([*kept, ("d9999.example", {}, ())])
    assert store.load(path) == 290
    assert store.save(path) == 10  # only the deletions
    assert len(_rows(path)) == 290
    store.update("d9999.example", lambda s: replace(s, checks={"dns": CheckState(failures=3)}))
    assert store.save(path) == 1


def test_a_database_replaced_behind_the_store_gets_a_full_save(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = _many(50)
    store.save(path)
    backup = tmp_path / "backup.db"
    shutil.copy(path, backup)
    store.update("d0001.example", lambda s: replace(s, checks={"rdap": CheckState(failures=9)}))
    store.save(path)
    # Someone restores the old backup while the exporter runs: it lacks the change to d0001.
    shutil.copy(backup, path)
    store.update("d0002.example", lambda s: replace(s, checks={"rdap": CheckState(failures=8)}))
    assert store.save(path) == 50  # the database is not the one the store last wrote
    failures = {n: r["checks"]["rdap"]["failures"] for n, r in _rows(path).items()}  # type: ignore[index]
    assert failures["d0001.example"] == 9 and failures["d0002.example"] == 8
    # Deleted by hand: the next save starts a new database with everything.
    path.unlink()
    store.update("d0003.example", lambda s: replace(s, checks={}))
    assert store.save(path) == 50
    # Saving the same store to a second file writes that one in full too.
    assert store.save(tmp_path / "other.db") == 50


def test_an_update_during_a_save_is_saved_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    store = _store(FULL, NOT_REGISTERED)
    store.save(path)
    store.update("gone.example", lambda s: replace(s, checks={"rdap": CheckState(failures=1)}))
    entered, release = threading.Event(), threading.Event()
    real = statefile.encode_json

    def slow(value: object) -> bytes:
        entered.set()
        assert release.wait(5)
        return real(value)

    monkeypatch.setattr(statefile, "encode_json", slow)
    saver = threading.Thread(target=store.save, args=(path,))
    saver.start()
    assert entered.wait(5)  # the save took its snapshot and is encoding outside the lock
    changed = replace(NOT_REGISTERED, checks={"rdap": CheckState(failures=2)})
    updater = threading.Thread(target=store.update, args=("gone.example", _replace_with(changed)))
    updater.start()
    updater.join(2)
    assert not updater.is_alive(), "an update waited for a save's encoding"
    assert store.get("gone.example") == changed  # a scrape sees it at once
    release.set()
    saver.join(5)
    monkeypatch.setattr(statefile, "encode_json", real)
    assert _rows(path)["gone.example"]["checks"]["rdap"]["failures"] == 1  # type: ignore[index]
    assert store.save(path) == 1
    restored = _fresh_like(FULL, NOT_REGISTERED)
    restored.load(path)
    assert restored.get("gone.example") == changed


# --- the state database: converting JSON, damaged files (issue 9) ---------------------------


def test_a_json_state_file_is_converted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    path = tmp_path / "state.json"
    _legacy_json(path, FULL, NOT_REGISTERED)
    store = _fresh_like(FULL, NOT_REGISTERED)
    assert store.load(path) == 2
    assert (
        store.get("example.com") == replace(FULL, rdap=_rdap_without_address(FULL))
        and store.get("gone.example") == NOT_REGISTERED
    )
    assert statedb.sniff(path) == "sqlite"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    converted = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert converted == [f"converted the JSON state file to a state database: path={path} "
                         "domains=2"]  # fmt: skip
    assert _warnings(caplog) == []
    # The conversion is the baseline: the first save writes nothing, a second start no
    # conversion.
    assert store.save(path) == 0
    caplog.clear()
    assert _fresh_like(FULL, NOT_REGISTERED).load(path) == 2
    assert not [r for r in caplog.records if "converted" in r.getMessage()]


def test_a_json_state_file_written_by_the_previous_version_is_converted(tmp_path: Path) -> None:
    # Written by the JSON-file code itself (git e748d1c^) from FULL and NOT_REGISTERED.
    path = tmp_path / "state.json"
    shutil.copy(REPO / "tests/testdata/state/state-v2.json", path)
    store = _fresh_like(FULL, NOT_REGISTERED)
    assert store.load(path) == 2
    assert statedb.sniff(path) == "sqlite"
    assert store.get("example.com") == replace(FULL, rdap=_rdap_without_address(FULL))
    assert store.get("gone.example") == NOT_REGISTERED


def test_a_json_state_file_keeps_unconfigured_domains_until_the_first_save(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    _legacy_json(path, FULL, NOT_REGISTERED)
    store = _fresh_like(NOT_REGISTERED)
    assert store.load(path) == 1
    assert set(_rows(path)) == {"example.com", "gone.example"}  # converted as it was
    assert store.save(path) == 1  # the row of the domain no longer configured
    assert set(_rows(path)) == {"gone.example"}


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flipped(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 97):  # every page after the header page
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:
    path.unlink()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE dashboards (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO dashboards (body) VALUES ('not ours')")
        conn.commit()


def _trigger(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TRIGGER t AFTER INSERT ON domains BEGIN DELETE FROM domains; END")
        conn.commit()


def _newer_schema(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
        conn.commit()


def _magic_only(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00")


@pytest.mark.parametrize(
    "damage",
    [_truncated, _flipped, _foreign, _trigger, _newer_schema, _magic_only],
    ids=["truncated", "flipped", "foreign", "trigger", "newer-schema", "magic-only"],
)
def test_a_damaged_database_is_moved_aside_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / "state.db"
    _many(200).save(path)
    damage(path)
    damaged = path.read_bytes()
    store = _many(200)
    before = store.snapshot()
    assert store.load(path) == 0
    assert store.snapshot() == before
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("ignoring unreadable state file:"), warnings
    assert "\n" not in warnings[0] and len(warnings[0]) < 500
    (moved,) = tmp_path.glob("state.db.corrupt-*")
    assert moved.read_bytes() == damaged  # the user's file, kept as it was
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    # The next save starts a complete new database.
    assert store.save(path) == 200
    assert _many(200).load(path) == 200


def test_an_empty_file_is_an_empty_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    path.touch()
    store = _store(FULL)
    assert store.load(path) == 0
    assert _warnings(caplog) == []
    assert store.save(path) == 1
    assert _fresh_like(FULL).load(path) == 1


def test_a_locked_database_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    _store(FULL).save(path)
    monkeypatch.setattr(statedb, "BUSY_TIMEOUT", 0.1)
    # An exclusive lock (another program mid-checkpoint, or a rollback-journal writer).
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("PRAGMA locking_mode = EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        assert _fresh_like(FULL).load(path) == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "cannot be read now" in warnings[0], warnings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]  # not moved aside
    assert _fresh_like(FULL).load(path) == 1


def test_a_wal_left_by_a_kill_is_recovered(tmp_path: Path) -> None:
    """A save committed into the WAL, then the process died before any checkpoint."""
    path = tmp_path / "state.db"
    _store(NOT_REGISTERED).save(path)
    holder = sqlite3.connect(path)  # keeps the WAL from being checkpointed at close
    holder.execute("SELECT 1 FROM domains").fetchone()
    store = _store(FULL, NOT_REGISTERED)
    store.save(path)
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    for name in ("state.db", "state.db-wal"):  # what a kill -9 leaves on disk
        shutil.copy(tmp_path / name, frozen / name)
    holder.close()
    assert (frozen / "state.db-wal").stat().st_size > 0
    restored = _fresh_like(FULL, NOT_REGISTERED)
    assert restored.load(frozen / "state.db") == 2
    assert restored.get("gone.example") == NOT_REGISTERED


def test_a_wal_without_its_database_is_not_replayed_into_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    other = tmp_path / "other.db"
    _store(NOT_REGISTERED).save(other)
    holder = sqlite3.connect(other)
    holder.execute("SELECT 1 FROM domains").fetchone()
    try:
        _store(FULL).save(other)
        # A stray WAL (its database deleted or moved by hand) where the new database goes.
        shutil.copy(tmp_path / "other.db-wal", tmp_path / "state.db-wal")
    finally:
        holder.close()
    store = _store(NOT_REGISTERED)
    assert store.save(path) == 1
    assert set(_rows(path)) == {"gone.example"}


def test_benchmark_smoke() -> None:
    """bench/state.py still runs: a tiny run, the exporter start included (127.92.0.1:9)."""
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "state.py"), "--domains", "200", "--rounds", "1",
         "--floor", "0.1", "--ready"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    for label in ("JSON file: load", "database: save, 1 % changed", "database: load", "ready"):
        assert label in out.stdout, out.stdout


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


def test_a_whois_result_ages_with_the_whois_check(tmp_path: Path) -> None:
    # RDAP and WHOIS results share the `rdap` field; the check that read it decides its age.
    assert FULL.rdap is not None
    status = replace(
        _aged(21 * DAY, 60, 60),
        rdap=replace(FULL.rdap, source="whois"),
    )
    status = replace(status, checks={**status.checks, "whois": replace(
        status.checks["dns"], last_success=NOW - 60)})  # fmt: skip
    path = tmp_path / "state.db"
    _store(status).save(path)
    store = _fresh_like(status)
    store.load(path, max_age={**MAX_AGE, "whois": 12 * 3600.0}, now=NOW)
    got = store.get("example.com")
    assert got is not None and got.rdap is not None  # the RDAP check's age does not count
    assert got.checks["rdap"].next_due is None  # ...though its own schedule is reset
    store = _fresh_like(status)
    store.load(path, max_age={**MAX_AGE, "whois": 30.0}, now=NOW)
    got = store.get("example.com")
    assert got is not None and got.rdap is None


def test_a_check_that_never_succeeded_keeps_its_schedule(tmp_path: Path) -> None:
    """The WHOIS check steps aside for an RDAP domain and is due again in hours; a check that
    only ever failed waits out its back-off. A restart must not make them all due at once:
    only a result older than max_age is re-checked at once."""
    stepped_aside = CheckState(next_due=NOW + 5 * 3600)
    failing = CheckState(
        success=False, last_attempt=NOW - 60, error="timeout", failures=3, next_due=NOW + 240
    )
    status = _aged(3600, 60, 60)
    status = replace(status, checks={**status.checks, "whois": stepped_aside, "dnssec": failing})
    path = tmp_path / "state.db"
    _store(status).save(path)
    store = _fresh_like(status)
    max_age = {**MAX_AGE, "whois": 12 * 3600.0, "dnssec": 1800.0}
    assert store.load(path, max_age=max_age, now=NOW) == 1
    got = store.get("example.com")
    assert got is not None
    assert got.checks == status.checks
    assert store.save(path) == 0  # nothing changed: nothing to write back


def test_a_restored_schedule_is_at_most_max_age_ahead(tmp_path: Path) -> None:
    # Saved by a clock that was weeks ahead: the check must not sleep for weeks.
    status = replace(
        _aged(3600, 60, 60),
        checks={**_aged(3600, 60, 60).checks, "whois": CheckState(next_due=NOW + 21 * DAY)},
    )
    path = tmp_path / "state.db"
    _store(status).save(path)
    store = _fresh_like(status)
    store.load(path, max_age={**MAX_AGE, "whois": 12 * 3600.0}, now=NOW)
    got = store.get("example.com")
    assert got is not None
    assert got.checks["whois"] == CheckState(next_due=NOW + 12 * 3600.0)
    assert got.checks["rdap"] == status.checks["rdap"]


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
