"""The latest known state of every domain, shared between the asyncio checks and the scrape thread.

Each `DomainStatus` is immutable; an update builds a new one and swaps it in under a lock, so a
scrape always sees a consistent record per domain without waiting for any check. The store can be
saved to and restored from a JSON state file so that a restart does not re-check everything.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.registration import ContactEmail, Registration

log = logging.getLogger(__name__)

CHECKS = ("rdap", "dns", "email")
STATE_VERSION = 1


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
        """Write atomically with mode 0600: the file holds registration data."""
        document = {
            "version": STATE_VERSION,
            "domains": {s.name: _dump_status(s) for s in self.snapshot()},
        }
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".domainwatch-", dir=target.parent or Path("."))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(document, fh, separators=(",", ":"))
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: str | Path) -> int:
        """Restore results for domains already in the store. Returns how many were restored.
        A missing or unreadable file is logged and ignored: it only costs a re-check."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
            if document.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported state version {document.get('version')!r}")
            saved = document["domains"]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable state file: path=%s error=%s", path, exc)
            return 0
        restored = 0
        with self._lock:
            for name, current in list(self._domains.items()):
                if name not in saved:
                    continue
                try:
                    self._domains[name] = _load_status(current, saved[name])
                    restored += 1
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring saved state: domain=%s error=%s", name, exc)
            self.generation += 1
        return restored


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _undt(value: object) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if isinstance(value, str) else None


def _dump_registration(reg: Registration) -> dict[str, Any]:
    return {
        "name": reg.name,
        "expiry": _dt(reg.expiry),
        "registrar_expiry": _dt(reg.registrar_expiry),
        "statuses": list(reg.statuses),
        "nameservers": list(reg.nameservers) if reg.nameservers is not None else None,
        "registrar": reg.registrar,
        "registrar_iana_id": reg.registrar_iana_id,
        # Contact addresses are personal data: only roles and kinds are kept on disk.
        "contacts": [{"role": c.role, "kind": c.kind} for c in reg.contacts],
    }


def _load_registration(d: Mapping[str, Any]) -> Registration:
    ns = d.get("nameservers")
    return Registration(
        name=str(d["name"]),
        expiry=_undt(d.get("expiry")),
        registrar_expiry=_undt(d.get("registrar_expiry")),
        statuses=tuple(d.get("statuses") or ()),
        nameservers=tuple(ns) if ns is not None else None,
        registrar=d.get("registrar"),
        registrar_iana_id=d.get("registrar_iana_id"),
        contacts=tuple(ContactEmail(role=c["role"], kind=c["kind"]) for c in d.get("contacts", [])),
    )


def _dump_status(s: DomainStatus) -> dict[str, Any]:
    out: dict[str, Any] = {
        "checks": {k: vars(v) for k, v in s.checks.items()},
    }
    if s.rdap:
        out["rdap"] = {
            "registered": s.rdap.registered,
            "server": s.rdap.server,
            "registration": _dump_registration(s.rdap.registration)
            if s.rdap.registration
            else None,
        }
    if s.dns:
        out["dns"] = {
            "parent_zone": s.dns.parent_zone,
            "parent": s.dns.parent,
            "child": s.dns.child,
            "delegated": s.dns.delegated,
            "lame": dict(s.dns.lame),
            "mismatch": s.dns.mismatch,
        }
    if s.email:
        out["email"] = [vars(v) for v in s.email.verdicts]
    return out


def _tuple_or_none(value: object) -> tuple[str, ...] | None:
    return tuple(str(x) for x in value) if isinstance(value, list) else None


def _load_status(current: DomainStatus, d: Mapping[str, Any]) -> DomainStatus:
    checks = {k: CheckState(**v) for k, v in d.get("checks", {}).items() if k in CHECKS}
    rdap = None
    if d.get("rdap"):
        r = d["rdap"]
        reg = r.get("registration")
        rdap = RdapResult(
            registered=bool(r["registered"]),
            server=r.get("server"),
            registration=_load_registration(reg) if reg else None,
        )
    dns = None
    if d.get("dns"):
        n = d["dns"]
        dns = DnsResult(
            parent_zone=n.get("parent_zone"),
            parent=_tuple_or_none(n.get("parent")),
            child=_tuple_or_none(n.get("child")),
            delegated=n.get("delegated"),
            lame=dict(n.get("lame") or {}),
            mismatch=n.get("mismatch"),
        )
    email = None
    if d.get("email") is not None:
        email = EmailResult(tuple(ContactVerdict(**v) for v in d["email"]))
    return replace(current, rdap=rdap, dns=dns, email=email, checks=checks)
