"""What changed, and when: the registry's and the parent's nameserver sets and the registrar.

A registrar-side hijack looks healthy once it is done: registry, parent and child agree on the
new nameservers, so a mismatch check without a configured expected set stays 0. The change itself
is the signal. `track` compares a domain's current registration and delegation with the last
sets it saw (kept in `DomainStatus.changes`, persisted with the state file) and stamps the time
of a change. The first observation of a set is only remembered, never a change: a new domain,
or an exporter started without state, must not look like a hijack.

Only measured facts count: the registry's set of a registration it answered (not a 404, not a
response without a nameserver list), the parent's set of a delegated domain (a hold or deletion
pulls the delegation; that is DomainOnHold's business, not a nameserver change).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from exporter.store import ChangeLog, DomainStatus, StatusStore

log = logging.getLogger(__name__)

# How long the set before a nameserver change is exported as domain_nameserver_info{previous=
# "1"} (the NS-changed alert's window is the same day).
PREVIOUS_KEEP_SECONDS = 86400.0


def observe(store: StatusStore, domain: str, now: float) -> None:
    """Bring the domain's ChangeLog up to date with its current data, logging what changed."""
    current = store.get(domain)
    if current is None or track(current, now) is current:
        return  # the common case: nothing changed, no store write
    seen: list[tuple[ChangeLog, ChangeLog]] = []

    def change(s: DomainStatus) -> DomainStatus:
        updated = track(s, now)
        seen.append((s.changes, updated.changes))
        return updated

    store.update(domain, change)
    for old, new in seen:
        _log_changes(domain, old, new)


def track(s: DomainStatus, now: float) -> DomainStatus:
    """`s` with its ChangeLog brought up to date (the same object when nothing changed)."""
    old = s.changes
    new = _nameservers(s, old, now)
    new = _registrar(s, new, now)
    if (
        new.previous_nameservers is not None
        and new.nameservers_changed_at is not None
        and now - new.nameservers_changed_at > PREVIOUS_KEEP_SECONDS
    ):
        new = replace(new, previous_nameservers=None)
    return s if new == old else replace(s, changes=new)


def _registry_set(s: DomainStatus) -> tuple[str, ...] | None:
    rdap = s.rdap
    if rdap is None or rdap.registered is not True or rdap.registration is None:
        return None
    found = rdap.registration.nameservers
    return None if found is None else tuple(sorted(found))


def _parent_set(s: DomainStatus) -> tuple[str, ...] | None:
    dns = s.dns
    if dns is None or dns.delegated is not True or not dns.parent:
        return None
    return tuple(sorted(dns.parent))


def _nameservers(s: DomainStatus, log_: ChangeLog, now: float) -> ChangeLog:
    out = log_
    registry, parent = _registry_set(s), _parent_set(s)
    if registry is not None and registry != out.registry_nameservers:
        out = _stamp(replace(out, registry_nameservers=registry), out.registry_nameservers, now)
    if parent is not None and parent != out.parent_nameservers:
        out = _stamp(replace(out, parent_nameservers=parent), out.parent_nameservers, now)
    return out


def _stamp(log_: ChangeLog, seen: tuple[str, ...] | None, now: float) -> ChangeLog:
    """A source's set moved away from `seen`; None was a first sight: remembered only."""
    if seen is None:
        return log_
    # The registry usually changes first and the parent follows at its next zone publication:
    # both stamp the time, and `previous` is the parent's old set then, the same as the
    # registry's old one.
    return replace(log_, nameservers_changed_at=now, previous_nameservers=seen)


def _normalised(name: str | None) -> str | None:
    if not name:
        return None
    return " ".join(name.casefold().split()) or None


def _registrar(s: DomainStatus, log_: ChangeLog, now: float) -> ChangeLog:
    rdap = s.rdap
    reg = rdap.registration if rdap is not None and rdap.registered is True else None
    if reg is None or not (reg.registrar or reg.registrar_iana_id):
        return log_
    name, iana = reg.registrar, reg.registrar_iana_id
    if log_.registrar_name is None and log_.registrar_iana_id is None:
        return replace(log_, registrar_name=name, registrar_iana_id=iana)  # first sight
    if iana and log_.registrar_iana_id:
        changed = iana != log_.registrar_iana_id  # the IANA ID is the registrar's identity
    else:
        # Without IDs on both sides only the names can tell; spelling and case are noise.
        old_name, new_name = _normalised(log_.registrar_name), _normalised(name)
        changed = old_name is not None and new_name is not None and old_name != new_name
    if not changed:
        # Keep what we know: a read without the ID must not erase it.
        return replace(
            log_,
            registrar_name=name or log_.registrar_name,
            registrar_iana_id=iana or log_.registrar_iana_id,
        )
    return replace(
        log_,
        registrar_name=name,
        registrar_iana_id=iana,
        registrar_changed_at=now,
        previous_registrar=_label(log_.registrar_name, log_.registrar_iana_id),
    )


def _label(name: str | None, iana: str | None) -> str:
    return f"{name or 'unknown'} (IANA {iana})" if iana else (name or "unknown")


def _log_changes(domain: str, old: ChangeLog, new: ChangeLog) -> None:
    if new.nameservers_changed_at != old.nameservers_changed_at:
        log.warning(
            "nameservers changed: domain=%s previous=%s registry=%s parent=%s",
            domain,
            ",".join(new.previous_nameservers or ()) or "-",
            ",".join(new.registry_nameservers or ()) or "-",
            ",".join(new.parent_nameservers or ()) or "-",
        )
    if new.registrar_changed_at != old.registrar_changed_at:
        log.warning(
            "registrar changed: domain=%s previous=%r now=%r",
            domain,
            new.previous_registrar,
            _label(new.registrar_name, new.registrar_iana_id),
        )
