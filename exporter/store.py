"""The latest known state of every domain, shared between the asyncio checks and the scrape thread.

Each `DomainStatus` is immutable; an update builds a new one and swaps it in under a lock, so a
scrape always sees a consistent record per domain without waiting for any check. The store can be
saved to and restored from a state database (exporter/statedb.py, one row per domain) so that a
restart does not re-check everything; a save writes only the domains that changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from exporter import statedb, statefile
from exporter.gcpause import gc_paused
from exporter.memo import per_object
from exporter.registration import Registration
from exporter.turns import Turns

log = logging.getLogger(__name__)

CHECKS = ("rdap", "whois", "dns", "email", "nsdomain", "dnssec")
STATE_VERSION = 2  # 2: generic field-by-field records (statefile.py); 1 still loads
_READABLE_VERSIONS = (1, 2)  # of legacy JSON files; the database only ever holds version 2


@dataclass(frozen=True, slots=True)
class CheckState:
    """Bookkeeping of one check kind for one domain: what makes a value trustworthy."""

    success: bool | None = None  # None: never attempted
    last_attempt: float | None = None
    last_success: float | None = None
    error: str | None = None  # reason of the last failure, from a fixed set
    failures: int = 0  # consecutive failures, for retry back-off
    next_due: float | None = None  # wall clock; survives restarts through the state file


@dataclass(frozen=True, slots=True)
class RdapResult:
    # True: the registry answered the domain object. False: a *confirmed* 404 (two 404s at least
    # rdap.hold_interval apart, or a 404 plus an authoritative NXDOMAIN at the parent). None: not
    # known yet (a first, unconfirmed 404 and nothing read before).
    registered: bool | None
    server: str | None
    registration: Registration | None  # None when not registered
    read_at: float | None = None  # Unix time the registration data above was read
    not_found_since: float | None = None  # first 404 of an unconfirmed (or confirmed) deletion
    # Which check read it: "rdap", or "whois" for registries without RDAP (same semantics: a
    # WHOIS not-found is confirmed like a 404).
    source: str = "rdap"


@dataclass(frozen=True, slots=True)
class DnsResult:
    parent_zone: str | None
    parent: tuple[str, ...] | None
    child: tuple[str, ...] | None
    delegated: bool | None
    lame: Mapping[str, str | None]  # nameserver -> reason, None when it answered properly
    mismatch: bool | None
    inconsistent: bool | None = None  # parent set != child apex NS set
    # When the parent and the registry were first seen to differ (None while they agree): the
    # registry's word counts once an RDAP read finished after this (verdicts.nameserver_verdict).
    disagree_since: float | None = None
    measured_at: float | None = None  # Unix time of the measurement


@dataclass(frozen=True, slots=True)
class DnssecResult:
    """The DNSSEC check's view (exporter/checks/dnssec.py). None always means "not measured";
    every field is None for a domain its parent does not delegate."""

    parent_zone: str | None = None
    signed: bool | None = None  # the parent publishes DS
    ds_mismatch: bool | None = None  # no DS names a key that signs a child's DNSKEY RRset
    signature_expiry: float | None = None  # earliest apex RRSIG expiration (Unix time)
    serial_drift: int | None = None  # newest minus oldest SOA serial (RFC 1982)
    glue_mismatch: Mapping[str, bool] = field(default_factory=dict)  # in-domain NS -> verdict
    # The parent's DS vs the registry's secureDNS.delegationSigned (dnssec.registry_verdict).
    registry_disagrees: bool | None = None
    registry_disagree_since: float | None = None
    measured_at: float | None = None


@dataclass(frozen=True, slots=True)
class ContactVerdict:
    role: str
    source: str  # config | rdap
    mail_domain: str
    deliverable: bool | None
    reason: str
    self_hosted: bool
    # At a consumer mailbox provider (gmail.com, outlook.com, ...): a person's mailbox, not a
    # role address of the organisation (exporter/mailproviders.py).
    personal: bool = False


@dataclass(frozen=True, slots=True)
class EmailResult:
    verdicts: tuple[ContactVerdict, ...]

    def by_role(self) -> dict[str, bool | None]:
        """A role is 0 if any of its mailboxes is undeliverable, 1 only if all are deliverable,
        and unknown otherwise: we never claim 1 for an address we could not judge."""
        out: dict[str, bool | None] = {}
        for v in self.verdicts:
            prev = out.get(v.role, True)
            if prev is False or v.deliverable is False:
                out[v.role] = False
            elif prev is None or v.deliverable is None:
                out[v.role] = None
            else:
                out[v.role] = True
        return out


@dataclass(frozen=True, slots=True)
class NsDomainVerdict:
    """The registration of one nameserver host's registrable domain (checks/nsdomains.py)."""

    nameserver_domain: str
    healthy: bool | None  # None: unknown (never read, lookup failed, unconfirmed 404)
    reason: str  # ok | unregistered | expired | hold | pending_delete | unknown | ...


@dataclass(frozen=True, slots=True)
class NsDomainResult:
    verdicts: tuple[NsDomainVerdict, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangeLog:
    """What domainwatch saw change, and when (exporter/changes.py). Persisted with the state,
    so a restart neither forgets a change nor mistakes its first reading for one."""

    registry_nameservers: tuple[str, ...] | None = None  # the last set seen, None: never seen
    parent_nameservers: tuple[str, ...] | None = None
    nameservers_changed_at: float | None = None  # Unix time the last change was observed
    previous_nameservers: tuple[str, ...] | None = None  # the set before it, kept for a day
    registrar_name: str | None = None
    registrar_iana_id: str | None = None
    registrar_changed_at: float | None = None
    previous_registrar: str | None = None


@dataclass(frozen=True, slots=True)
class DomainStatus:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    expected_nameservers: tuple[str, ...] = ()
    rdap: RdapResult | None = None
    dns: DnsResult | None = None
    email: EmailResult | None = None
    checks: Mapping[str, CheckState] = field(default_factory=dict)
    dnssec: DnssecResult | None = None  # the `dnssec` check's result
    # `domains[].expires`, used when no registry gives a date. Set from the config on every
    # sync and at start-up (checks/whois.py), so a value restored from the state file never
    # outlives a config change.
    manual_expiry: datetime | None = None
    # Where the registration is read from ("rdap", "whois", "config", or None: nowhere) and the
    # server ("https://...", "whois://host:port"): set by the registration checks on every run,
    # so `check` can say what it used or would use, even after a failure.
    registry_source: str | None = None
    registry_server: str | None = None
    nsdomain: NsDomainResult | None = None  # the `nsdomain` check's result
    changes: ChangeLog = field(default_factory=ChangeLog)

    def check(self, kind: str) -> CheckState:
        return self.checks.get(kind) or CheckState()


# What a domain holds before its first result. Its empty `checks` and ChangeLog are shared by
# every new record: records are immutable, and a check's update makes a new mapping.
_BLANK = DomainStatus(name="")


class Records(Protocol):
    """What /metrics and the status page read: StatusStore, or a view of it (probe.ListedView)."""

    def snapshot(self) -> list[DomainStatus]: ...

    @property
    def generation(self) -> int: ...


class StatusStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._domains: dict[str, DomainStatus] = {}
        self._generation = 0  # bumps on every change (see generation)
        # Names whose database row may differ from their record (changed, or removed and still
        # to be deleted) since the last save; guarded by _lock like the records.
        self._dirty: set[str] = set()
        self._save_lock = threading.Lock()  # one save or load at a time
        # The database (absolute path, mark) the dirty set is relative to; None: save in full.
        self._saved: tuple[str, statedb.Mark] | None = None
        # Each record's /metrics lines are saved with it (keep_expositions), so that a restart
        # serves its first scrape without rendering every domain again.
        self._pack: Callable[[DomainStatus], bytes | None] | None = None
        self._pack_format = b""
        # name -> (restored record, its saved lines), until the collector's first rendering.
        self._restored_lines: dict[str, tuple[DomainStatus, bytes]] = {}

    def sync(self, domains: Iterable[tuple[str, Mapping[str, str], tuple[str, ...]]]) -> None:
        """Make the store hold exactly these (name, labels, expected NS) domains, in this order.
        Known domains keep their results; removed ones are dropped, so their series vanish."""
        with self._lock, gc_paused():  # 100k new records at start-up (gcpause.py)
            fresh: dict[str, DomainStatus] = {}
            known = self._domains
            for name, labels, expected in domains:
                # The config's own mapping when it is a dict: equal label sets are one shared
                # dict there (never mutated), and 100k copies would cost ~20 MB.
                own = labels if type(labels) is dict else dict(labels)
                old = known.get(name)
                if old is None:  # a copy of one blank record: __init__ cost ~0.5 s at 100k
                    fresh[name] = statefile.evolve(
                        _BLANK, name=name, labels=own, expected_nameservers=expected
                    )
                elif old.labels == labels and old.expected_nameservers == expected:
                    fresh[name] = old  # unchanged: the same record (caches keyed on it hold)
                else:
                    fresh[name] = replace(old, labels=own, expected_nameservers=expected)
            # Labels and expected nameservers are not saved: only removals touch the database.
            self._dirty.update(self._domains.keys() - fresh.keys())
            self._domains = fresh
            self._generation += 1

    def update(self, name: str, change: Callable[[DomainStatus], DomainStatus]) -> None:
        with self._lock:
            current = self._domains.get(name)
            if current is None:  # removed by a reload while its check ran
                return
            self._domains[name] = change(current)
            self._dirty.add(name)
            self._generation += 1

    def get(self, name: str) -> DomainStatus | None:
        with self._lock:
            return self._domains.get(name)

    @property
    def generation(self) -> int:
        """A count that grows with every change: lets the saver skip a clean store and the
        collector tell how many changes its last rendering lacks."""
        return self._generation

    def snapshot(self) -> list[DomainStatus]:
        with self._lock:
            return list(self._domains.values())

    # --- persistence -----------------------------------------------------------------------

    def keep_expositions(self, pack: Callable[[DomainStatus], bytes | None], fmt: str) -> None:
        """Save each record's rendered lines, `pack(record)`, with it; `fmt` names how lines
        are written (collector.EXPOSITION_FORMAT), so lines of another version are not used.
        Set before load(): lines are restored only for a store that would save them again."""
        self._pack = pack
        self._pack_format = fmt.encode("ascii")

    def take_exposition(self, name: str) -> tuple[DomainStatus, bytes] | None:
        """(the record load() restored, the lines saved with it) for a domain whose config
        gave it the same name, labels and expected nameservers then; once. The record may
        have been updated since: the caller compares. Thread-safe: dict.pop is atomic."""
        return self._restored_lines.pop(name, None)

    def forget_expositions(self) -> None:
        """Drop what take_exposition() was not asked for (domains removed meanwhile)."""
        self._restored_lines = {}

    def save(self, path: str | Path) -> int:
        """Write the domains that changed since the last save (and delete the rows of removed
        ones) to the state database at PATH, in one transaction; the first save to a database
        this store did not load or write writes every domain. Returns the rows touched.

        Meant for a worker thread: under the lock it only swaps the dirty set and copies the
        dict of (immutable) records; encoding and SQLite run outside it. Raises OSError only:
        the caller logs it and tries again at the next save, which retries these domains."""
        target = Path(path)
        key = os.path.abspath(target)
        with self._save_lock:
            with self._lock:
                dirty, self._dirty = self._dirty, set()
                domains = dict(self._domains)
            expect = self._saved[1] if self._saved and self._saved[0] == key else None
            if expect is not None and not dirty:
                return 0

            pack, fmt = self._pack, self._pack_format

            turn = Turns()  # the event loop's turns during seconds of encoding

            def rows(full: bool) -> Iterator[tuple[str, bytes | None]]:
                for name in domains if full else dirty:
                    turn()
                    status = domains.get(name)
                    if status is None:
                        yield name, None
                    else:
                        yield name, _encode_row(status, pack, fmt)

            try:
                mark, touched = statedb.write(target, rows, expect, STATE_VERSION, time.time())
            except BaseException:
                with self._lock:
                    self._dirty |= dirty
                raise
            self._saved = (key, mark)
            return touched

    def load(
        self,
        path: str | Path,
        max_age: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> int:
        """Restore results for domains already in the store; returns how many were restored.

        Never raises: a missing, unreadable, corrupt or hostile file (any depth, size, type) is
        logged in one line and ignored, since it only costs a re-check; a bad record skips that
        domain only. A file that is not a usable state database is moved aside to
        PATH.corrupt-<time> (statedb.quarantine), never deleted; one that cannot be read right
        now (locked, I/O error) is left alone. A legacy JSON state file is converted to a
        database once. Leftovers of a killed save or conversion are removed first.

        `max_age[kind]`: a check whose last success is older than this (the caller passes twice
        the check's interval) loses its result, so its gauges stay absent instead of showing
        weeks-old news as current; its CheckState stays (age metrics) with next_due cleared, so
        the scheduler re-checks it at once.
        """
        target = Path(path)
        with self._save_lock:
            removed = statefile.remove_stale_temp_files(target.parent)
            removed += statedb.remove_leftovers(target)
            if removed:
                log.info("removed stale state temp files: count=%d", len(removed))
            with self._lock:
                current = dict(self._domains)
            reader = _Restore(current, max_age or {}, time.time() if now is None else now)
            reader.lines_format = self._pack_format if self._pack is not None else None
            try:
                kind = statedb.sniff(target)
                if kind == "missing":
                    return 0
                if kind == "json":
                    _migrate(target)
                elif kind == "other":
                    raise statefile.StateError("neither a state database nor a JSON state file")
                with gc_paused():
                    info = statedb.read(target, reader.visit, (STATE_VERSION,))
            except statefile.StateError as exc:
                moved = statedb.quarantine(target)
                log.warning(
                    "ignoring unreadable state file: path=%s error=%s moved_to=%s",
                    path,
                    _one_line(str(exc)),
                    moved,
                )
                return 0
            except OSError as exc:
                log.warning(
                    "ignoring state file that cannot be read now: path=%s error=%s",
                    path,
                    _one_line(str(exc)),
                )
                return 0
            with self._lock:
                restored = 0
                for name, status in reader.restored.items():
                    if self._domains.get(name) is current[name]:  # not updated meanwhile
                        self._domains[name] = status
                        restored += 1
                self._restored_lines = reader.lines
                # Rows to rewrite (aged, bad) or delete (no longer configured) at the next save.
                self._dirty.update(reader.rewrite)
                self._generation += 1
            self._saved = (
                (os.path.abspath(target), info.mark)
                if info.mark is not None and not reader.odd_rows
                else None  # rows a targeted delete cannot name: the next save rewrites all
            )
        if reader.failed:
            log.warning(
                "ignoring saved state of %d domains: first %s", reader.failed, reader.first_error
            )
        if reader.stale:
            log.info("restored results too old to export, re-checking: count=%d", reader.stale)
        return restored


class _Restore:
    """Turns database rows into records for the domains of a store snapshot (load())."""

    def __init__(
        self, current: Mapping[str, DomainStatus], max_age: Mapping[str, float], now: float
    ) -> None:
        self.current = current
        self.max_age = max_age
        self.now = now
        self.restored: dict[str, DomainStatus] = {}
        self.rewrite: list[str] = []
        self.failed = 0
        self.stale = 0
        self.odd_rows = 0
        self.first_error = ""
        self.decoder = statefile.Decoder()  # equal values of the records share one object
        # The format saved lines must have to be kept (None: keep none); what was kept.
        self.lines_format: bytes | None = None
        self.lines: dict[str, tuple[DomainStatus, bytes]] = {}

    def visit(self, name: object, data: bytes | None) -> None:
        if type(name) is not str:
            self.odd_rows += 1
            return
        status = self.current.get(name)
        if status is None:
            if name.isascii() or _encodable(name):
                self.rewrite.append(name)  # deleted at the next save
            else:  # damaged text: a targeted DELETE cannot name it
                self.odd_rows += 1
            return
        decoder = self.decoder
        try:
            if data is None:
                raise statefile.StateError(
                    f"not a record of at most {statedb.MAX_RECORD_BYTES} bytes"
                )
            data, lines = _split_row(data)
            record = decoder.decode(data)
            decoder.share(status.name)  # the registration's name is the domain's: one string
            loaded = _load_status(status, record, decoder)
        except statefile.StateError as exc:
            self.failed += 1
            self.rewrite.append(name)
            shown = name[:80] if name.isprintable() else repr(name)[:80]
            self.first_error = self.first_error or f"domain={shown} error={exc}"
            return
        aged, dropped = _age_limit(loaded, self.max_age, self.now)
        self.stale += dropped
        self.restored[name] = aged
        if aged is not loaded:
            self.rewrite.append(name)
        if lines is not None and self.lines_format is not None:
            # Kept with the record they were rendered from: the collector uses them only
            # where the record it renders looks alike (not after a result aged out here).
            blob = _lines_for(loaded, lines, self.lines_format)
            if blob is not None:
                self.lines[name] = (loaded, blob)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode_status(status: DomainStatus) -> bytes:
    try:
        return statefile.encode_json(_dump_status(status))
    except statefile.StateError as exc:  # a bug in a result type, not damage to the file
        raise OSError(f"cannot encode domain={status.name}: {exc}") from None


# A row is the record's JSON, then optionally a newline (never inside compact JSON) and its
# /metrics lines: the lines' format (collector.EXPOSITION_FORMAT), a digest of what the config
# gave the domain, both fixed-size, then the packed lines.
_LINES_MARK = b"\n"
_DIGEST_BYTES = 8


def _config_digest(status: DomainStatus) -> bytes:
    """What the config puts into every line of a domain: saved lines are only used again for
    the same name, labels and expected nameservers."""
    digest = hashlib.blake2b(status.name.encode(), digest_size=_DIGEST_BYTES)
    digest.update(b"\x00" + _config_text(status.labels, status.expected_nameservers))
    return digest.digest()


@per_object
def _config_text(labels: Mapping[str, str], expected: tuple[str, ...]) -> bytes:
    # Label mappings and nameserver tuples are shared between domains (config.py): their text
    # is made once per pair, not per domain.
    return repr((sorted(labels.items()), expected)).encode()


def _encode_row(
    status: DomainStatus, pack: Callable[[DomainStatus], bytes | None] | None, fmt: bytes
) -> bytes:
    record = _encode_status(status)
    if pack is None:
        return record
    try:
        lines = pack(status)
    except Exception:  # never lose a save over a rendering bug: the lines are an optimisation
        log.debug("cannot pack the lines of domain=%s", status.name, exc_info=True)
        return record
    if lines is None:
        return record
    return b"".join((record, _LINES_MARK, fmt, _config_digest(status), lines))


def _split_row(data: bytes) -> tuple[bytes, bytes | None]:
    """(record, lines part or None)."""
    record, mark, lines = data.partition(_LINES_MARK)
    return (record, lines) if mark else (data, None)


def _lines_for(status: DomainStatus, lines: bytes, fmt: bytes) -> bytes | None:
    head = len(fmt)
    if lines[:head] != fmt or lines[head : head + _DIGEST_BYTES] != _config_digest(status):
        return None
    return lines[head + _DIGEST_BYTES :] or None


def _migrate(path: Path) -> None:
    """Convert the legacy JSON state file at PATH into a database, once. StateError when the
    JSON is unusable (the caller moves it aside); bad records are carried over and reported by
    the read that follows, exactly as the JSON loader reported them."""
    saved = _saved_domains(statefile.read_document(path))
    if saved is None:
        return

    def rows() -> Iterator[tuple[str, bytes]]:
        for name, record in saved.items():
            try:
                yield name, statefile.encode(record)
            except statefile.StateError:
                continue  # not writable as JSON again: it could not have been restored either

    count = statedb.migrate(path, rows(), STATE_VERSION)
    log.info("converted the JSON state file to a state database: path=%s domains=%d", path, count)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


# What the config owns is never restored from the file: a reload may have changed it.
_CONFIG_FIELDS = frozenset({"name", "labels", "expected_nameservers"})


def _saved_domains(document: object) -> Mapping[str, object] | None:
    if document is None:
        return None
    if not isinstance(document, dict):
        raise statefile.StateError("not a state file (top level is not an object)")
    version = document.get("version")
    if version not in _READABLE_VERSIONS or isinstance(version, bool):
        raise statefile.StateError(f"unsupported state version {str(version)[:20]!r}")
    saved = document.get("domains")
    if not isinstance(saved, dict):
        raise statefile.StateError("not a state file (no 'domains' object)")
    if version == 1:
        return {name: _upgrade_v1(record) for name, record in saved.items()}
    return saved


def _upgrade_v1(record: object) -> object:
    # Version 1 wrote the e-mail verdicts as a bare list; everything else is a subset of v2.
    if isinstance(record, dict) and isinstance(record.get("email"), list):
        return {**record, "email": {"verdicts": record["email"]}}
    return record


def _dump_status(s: DomainStatus) -> dict[str, Any]:
    record: dict[str, Any] = statefile.dumper(DomainStatus, _CONFIG_FIELDS)(s)
    return record


def _load_status(
    current: DomainStatus, record: object, decoder: statefile.Decoder | None = None
) -> DomainStatus:
    """`current` (which keeps what the config owns) with the results of a saved record; a
    field the record lacks takes its default. StateError for a record that does not fit."""
    if type(record) is dict:
        checks = record.get("checks")
        if type(checks) is dict and not checks.keys() <= _KNOWN_CHECKS:
            # A kind this version does not run (any more): not even read.
            record = {**record, "checks": {k: v for k, v in checks.items() if k in CHECKS}}
    return (decoder or statefile.Decoder()).onto(current, record, _CONFIG_FIELDS)


_KNOWN_CHECKS = frozenset(CHECKS)


def _age_limit(
    status: DomainStatus, max_age: Mapping[str, float], now: float
) -> tuple[DomainStatus, int]:
    """Drop each result whose last success is older than max_age[kind] (or newer than now +
    max_age: a broken clock's) and clear its check's next_due, so it is re-checked at once;
    see StatusStore.load. A check that has no result and no success on record (one that
    never succeeded, such as the WHOIS check of a domain RDAP serves) keeps its next_due: a
    restart must not re-run all of them at once. That is bounded to max_age ahead against a
    clock that jumped back (the scheduler waits at most one interval anyway).
    Returns the status (the same object when nothing changed, the common case) and the number
    of results dropped."""
    checks = status.checks
    dropped: dict[str, None] = {}
    changed: dict[str, CheckState] = {}
    for kind, limit in max_age.items():
        if kind not in _KNOWN_CHECKS:
            continue
        state = checks.get(kind)
        last = state.last_success if state is not None else None
        if last is not None and -limit <= now - last <= limit:
            continue
        attribute = _result_of(status, kind)
        if attribute is not None:
            dropped[attribute] = None
        if state is None or state.next_due is None:
            continue
        if last is None and attribute is None:  # never succeeded: keep its schedule
            if state.next_due - now <= limit:
                continue
            changed[kind] = statefile.evolve(state, next_due=now + limit)
        else:
            changed[kind] = statefile.evolve(state, next_due=None)
    if not dropped and not changed:
        return status, 0
    if changed:
        return statefile.evolve(status, **dropped, checks={**checks, **changed}), len(dropped)
    return statefile.evolve(status, **dropped), len(dropped)


def _result_of(status: DomainStatus, kind: str) -> str | None:
    """The field holding the result check `kind` produced, None if it holds none. RDAP and
    WHOIS share `rdap` (RdapResult.source says which one read it)."""
    if kind in ("rdap", "whois"):
        return "rdap" if status.rdap is not None and status.rdap.source == kind else None
    return kind if getattr(status, kind, None) is not None else None
