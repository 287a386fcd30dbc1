"""The latest known state of every domain, shared between the asyncio checks and the scrape thread.

Each `DomainStatus` is immutable; an update builds a new one and swaps it in under a lock, so a
scrape always sees a consistent record per domain without waiting for any check. The store can be
saved to and restored from a JSON state file so that a restart does not re-check everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from exporter import statefile
from exporter.registration import Registration

log = logging.getLogger(__name__)

CHECKS = ("rdap", "whois", "dns", "email")
STATE_VERSION = 2  # 2: generic field-by-field records (statefile.py); 1 still loads
_READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class CheckState:
    """Bookkeeping of one check kind for one domain: what makes a value trustworthy."""

    success: bool | None = None  # None: never attempted
    last_attempt: float | None = None
    last_success: float | None = None
    error: str | None = None  # reason of the last failure, from a fixed set
    failures: int = 0  # consecutive failures, for retry back-off
    next_due: float | None = None  # wall clock; survives restarts through the state file


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class ContactVerdict:
    role: str
    source: str  # config | rdap
    mail_domain: str
    deliverable: bool | None
    reason: str
    self_hosted: bool


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class DomainStatus:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    expected_nameservers: tuple[str, ...] = ()
    rdap: RdapResult | None = None
    dns: DnsResult | None = None
    email: EmailResult | None = None
    checks: Mapping[str, CheckState] = field(default_factory=dict)
    # `domains[].expires`, used when no registry gives a date. Set from the config on every
    # sync and at start-up (checks/whois.py), so a value restored from the state file never
    # outlives a config change.
    manual_expiry: datetime | None = None
    # Where the registration is read from ("rdap", "whois", "config", or None: nowhere) and the
    # server ("https://...", "whois://host:port"): set by the registration checks on every run,
    # so `check` can say what it used or would use, even after a failure.
    registry_source: str | None = None
    registry_server: str | None = None

    def check(self, kind: str) -> CheckState:
        return self.checks.get(kind) or CheckState()


class StatusStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._domains: dict[str, DomainStatus] = {}
        self.generation = 0  # bumps on every change; lets savers skip clean states

    def sync(self, domains: Iterable[tuple[str, Mapping[str, str], tuple[str, ...]]]) -> None:
        """Make the store hold exactly these (name, labels, expected NS) domains, in this order.
        Known domains keep their results; removed ones are dropped, so their series vanish."""
        with self._lock:
            fresh: dict[str, DomainStatus] = {}
            for name, labels, expected in domains:
                old = self._domains.get(name) or DomainStatus(name=name)
                fresh[name] = replace(old, labels=dict(labels), expected_nameservers=expected)
            self._domains = fresh
            self.generation += 1

    def update(self, name: str, change: Callable[[DomainStatus], DomainStatus]) -> None:
        with self._lock:
            current = self._domains.get(name)
            if current is None:  # removed by a reload while its check ran
                return
            self._domains[name] = change(current)
            self.generation += 1

    def get(self, name: str) -> DomainStatus | None:
        with self._lock:
            return self._domains.get(name)

    def snapshot(self) -> list[DomainStatus]:
        with self._lock:
            return list(self._domains.values())

    # --- persistence -----------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the state file crash-safely (statefile.write_atomic). Raises OSError only: the
        caller logs it and tries again at the next save."""
        document = {
            "version": STATE_VERSION,
            "domains": {s.name: _dump_status(s) for s in self.snapshot()},
        }
        try:
            data = statefile.encode(document)
        except statefile.StateError as exc:  # a bug in a result type, not a disk problem
            raise OSError(str(exc)) from None
        statefile.write_atomic(Path(path), data)

    def load(
        self,
        path: str | Path,
        max_age: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> int:
        """Restore results for domains already in the store; returns how many were restored.

        Never raises: a missing, unreadable, corrupt or hostile file (any depth, size, type) is
        logged in one line and ignored, since it only costs a re-check; a bad record skips that
        domain only. Stale temp files of a killed save are removed first.

        `max_age[kind]`: a check whose last success is older than this (the caller passes twice
        the check's interval) loses its result, so its gauges stay absent instead of showing
        weeks-old news as current; its CheckState stays (age metrics) with next_due cleared, so
        the scheduler re-checks it at once.
        """
        target = Path(path)
        removed = statefile.remove_stale_temp_files(target.parent)
        if removed:
            log.info("removed stale state temp files: count=%d", len(removed))
        try:
            saved = _saved_domains(statefile.read_document(target))
        except statefile.StateError as exc:
            log.warning("ignoring unreadable state file: path=%s error=%s", path, exc)
            return 0
        if saved is None:
            return 0
        now = time.time() if now is None else now
        restored, failed, stale = 0, 0, 0
        first_error = ""
        with self._lock:
            for name, current in list(self._domains.items()):
                if name not in saved:
                    continue
                try:
                    status = _load_status(current, saved[name])
                except statefile.StateError as exc:
                    failed += 1
                    first_error = first_error or f"domain={name} error={exc}"
                    continue
                status, dropped = _age_limit(status, max_age or {}, now)
                stale += dropped
                self._domains[name] = status
                restored += 1
            self.generation += 1
        if failed:
            log.warning("ignoring saved state of %d domains: first %s", failed, first_error)
        if stale:
            log.info("restored results too old to export, re-checking: count=%d", stale)
        return restored


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
    return {
        f.name: statefile.dump(getattr(s, f.name))
        for f in fields(DomainStatus)
        if f.name not in _CONFIG_FIELDS
    }


def _load_status(current: DomainStatus, record: object) -> DomainStatus:
    loaded = statefile.load_dataclass(
        DomainStatus,
        {**record, "name": current.name} if isinstance(record, dict) else record,
        skip=_CONFIG_FIELDS - {"name"},
    )
    checks = {k: v for k, v in loaded.checks.items() if k in CHECKS}
    persisted = {f.name: getattr(loaded, f.name) for f in fields(DomainStatus)}
    for name in _CONFIG_FIELDS:
        del persisted[name]
    return replace(current, **{**persisted, "checks": checks})


def _age_limit(
    status: DomainStatus, max_age: Mapping[str, float], now: float
) -> tuple[DomainStatus, int]:
    """Drop each result whose last success is older than max_age[kind]; see StatusStore.load."""
    changes: dict[str, Any] = {}
    checks = dict(status.checks)
    for kind, limit in max_age.items():
        if kind not in CHECKS:
            continue
        state = checks.get(kind)
        last = state.last_success if state else None
        # A success "in the future" beyond the limit is a broken clock's, not news.
        if last is not None and -limit <= now - last <= limit:
            continue
        if getattr(status, kind) is not None:
            changes[kind] = None
        if state is not None and state.next_due is not None:
            checks[kind] = replace(state, next_due=None)
    if not changes and checks == status.checks:
        return status, 0
    return replace(status, **changes, checks=checks), len(changes)
