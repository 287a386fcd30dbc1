"""RDAP domain objects (RFC 9083) turned into a `Registration`: a pure function, no I/O.

Everything here is defensive: registries disagree on case, date formats, role spellings and how
they redact. A field we cannot read becomes "unknown" (None / empty) instead of failing the whole
domain; only a body that is not a domain object at all raises `InvalidResponse`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from exporter.names import normalise_host

HOLD_STATUSES = frozenset({"client hold", "server hold"})
DYING_STATUSES = frozenset({"pending delete", "redemption period", "pending restore"})
# Either lock stops a transfer to another registrar (RFC 5731 clientTransferProhibited /
# serverTransferProhibited); its removal is the usual first step of a registrar-side hijack.
TRANSFER_LOCK_STATUSES = frozenset({"client transfer prohibited", "server transfer prohibited"})

# Roles whose mailbox the registrar writes to (verification, renewal, transfer mail).
CONTACT_ROLES = ("registrant", "administrative", "technical", "billing")
_ROLE_ALIASES = {"tech": "technical", "admin": "administrative"}

# Well-known privacy/proxy relays: the mailbox is a forwarder, not the holder's own.
_RELAY_DOMAINS = (
    "whoisguard.com",
    "anonymised.email",
    "withheldforprivacy.com",
    "domainsbyproxy.com",
    "contactprivacy.com",
    "privacyguardian.org",
    "whoisprivacyprotect.com",
    "identity-protect.org",
    "domainprivacygroup.com",
    "privacy-link.com",
    "redacted-for-privacy.com",
    "proxy.dreamhost.com",
)
_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_MAX_EMAIL = 320  # RFC 5321 path limits: 64 + 1 + 255


class InvalidResponse(ValueError):
    """The RDAP body is not a usable domain object."""


@dataclass(frozen=True, slots=True)
class ContactEmail:
    """One contact mailbox found in RDAP. `kind` says whether it can be checked at all."""

    role: str
    kind: str  # real | relay | web_form | redacted | absent
    email: str | None = field(default=None, repr=False)  # only set for kind == "real"


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    expiry: datetime | None = None
    registrar_expiry: datetime | None = None
    statuses: tuple[str, ...] = ()
    nameservers: tuple[str, ...] | None = None  # None: the response lists none (not "empty")
    # RDAP secureDNS.delegationSigned (RFC 9083 §5.3): the registry holds DS data for the
    # domain. None when the registry does not say.
    dnssec_signed: bool | None = None
    registrar: str | None = None
    registrar_iana_id: str | None = None
    contacts: tuple[ContactEmail, ...] = ()
    registrar_link: str | None = None  # rel=related RDAP link (thin registries)
    redacted: tuple[str, ...] = ()  # RFC 9537 names of redacted fields
    warnings: tuple[str, ...] = ()
    last_changed: datetime | None = None  # the registry's `last changed` event

    @property
    def on_hold(self) -> bool:
        return bool(HOLD_STATUSES.intersection(self.statuses))

    @property
    def transfer_locked(self) -> bool:
        return bool(TRANSFER_LOCK_STATUSES.intersection(self.statuses))

    @property
    def dying(self) -> bool:
        return bool(DYING_STATUSES.intersection(self.statuses))

    @property
    def paid_until(self) -> datetime | None:
        """When the registration stops being paid for: the earlier of the registry's expiration
        and the registrar's own. At expiry .com-style registries auto-renew for a year (status
        `auto renew period`) while the registrar may still delete within 45 days, so only the
        registrar's date tells that nobody paid."""
        dates = [d for d in (self.expiry, self.registrar_expiry) if d is not None]
        return min(dates) if dates else None


def normalise_status(raw: str) -> str:
    """'clientHold', 'CLIENT HOLD', 'clientHold https://icann.org/epp#clientHold' all become
    'client hold' (RFC 8056 spelling)."""
    text = raw.strip().split(" http", 1)[0].strip()
    if " " not in text and "_" not in text:
        text = _CAMEL.sub(" ", text)
    status = " ".join(text.replace("_", " ").lower().split())
    # The two EPP names RFC 8056 renames rather than re-spells.
    return {"ok": "active", "linked": "associated"}.get(status, status)


def parse_date(raw: object) -> tuple[datetime | None, str | None]:
    """RDAP eventDate -> aware UTC datetime, plus a warning when the value needed guessing."""
    if not isinstance(raw, str) or not raw.strip():
        return None, "empty date"
    text = raw.strip()[:64]  # a date is ~25 characters; the rest would only bloat warnings
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC), f"date without time zone {text!r}, assumed UTC"
        return value.astimezone(UTC), None
    except (ValueError, OverflowError):
        # Years past 9999 (Nomulus' "end of time"), year 1 with an offset, or junk: unknown.
        return None, f"unreadable date {text!r}"


def _vcard_props(entity: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any], Any]]:
    card = entity.get("vcardArray")
    if not (isinstance(card, list) and len(card) >= 2 and isinstance(card[1], list)):
        return
    for prop in card[1]:
        if isinstance(prop, list) and len(prop) >= 4 and isinstance(prop[0], str):
            params = prop[1] if isinstance(prop[1], dict) else {}
            yield prop[0].lower(), params, prop[3]


def _vcard_text(entity: Mapping[str, Any], *names: str) -> str | None:
    for name, _params, value in _vcard_props(entity):
        if name in names and isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _walk_entities(entities: object, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    if not isinstance(entities, list) or depth > 4:
        return
    for ent in entities:
        if isinstance(ent, dict):
            yield ent
            yield from _walk_entities(ent.get("entities"), depth + 1)


def _roles(entity: Mapping[str, Any]) -> set[str]:
    roles = entity.get("roles")
    if not isinstance(roles, list):
        return set()
    out = set()
    for r in roles:
        if isinstance(r, str):
            role = r.strip().lower()
            out.add(_ROLE_ALIASES.get(role, role))
    return out


def classify_email(value: object) -> tuple[str, str | None]:
    """-> (kind, address-or-None). Only kind 'real' carries the address."""
    if not isinstance(value, str):
        return "absent", None
    text = value.strip()
    if len(text) > _MAX_EMAIL:
        # Not an address, and _EMAIL backtracks quadratically on long hostile text.
        return "redacted", None
    if text.lower().startswith("mailto:"):
        text = text[7:]
    if not text:
        return "redacted", None
    if not _EMAIL.match(text):
        return "redacted", None  # "Please query the RDDS service of the Registrar of Record..."
    domain = text.rsplit("@", 1)[1].lower()
    if any(domain == d or domain.endswith("." + d) for d in _RELAY_DOMAINS):
        return "relay", None
    return "real", text


def _contacts(entities: object) -> tuple[ContactEmail, ...]:
    found: list[ContactEmail] = []
    for ent in _walk_entities(entities):
        roles = _roles(ent) & set(CONTACT_ROLES)
        if not roles:
            continue
        emails = [v for n, _p, v in _vcard_props(ent) if n == "email"]
        web_forms = [
            v
            for n, _p, v in _vcard_props(ent)
            if n == "contact-uri" and isinstance(v, str) and v.startswith(("http://", "https://"))
        ]
        for role in sorted(roles):
            if emails:
                for value in emails:
                    kind, address = classify_email(value)
                    found.append(ContactEmail(role=role, kind=kind, email=address))
            elif web_forms:
                found.append(ContactEmail(role=role, kind="web_form"))
            else:
                found.append(ContactEmail(role=role, kind="redacted"))
    return tuple(found)


_IANA_REGISTRAR_ID = "iana registrar id"  # RFC 9083 publicIds type ICANN's profile requires
# IANA's registrar IDs 9995-9999 name no registrar: test/monitoring transactions and "Registry
# Operator acts as Registrar" (AFNIC's "Registry Operations" 9999 for its own domains).
_RESERVED_IANA_IDS = range(9995, 10000)


def _registrar(entities: object) -> tuple[str | None, str | None]:
    for ent in _walk_entities(entities):
        if "registrar" not in _roles(ent):
            continue
        # CZ.NIC identifies the registrar by its handle alone (no vCard): the handle is the
        # name then, rather than "unknown".
        name = _vcard_text(ent, "fn", "org") or _text(ent.get("handle")).strip()[:200] or None
        iana_id = None
        pids = ent.get("publicIds")
        for pid in pids if isinstance(pids, list) else []:
            # Only the IANA registrar ID counts: registry-local IDs (AFNIC's, Norid's "Norid
            # registrar ID") are not IANA numbers and must not be exported as such.
            if not isinstance(pid, dict) or (
                " ".join(_text(pid.get("type")).lower().split()) != _IANA_REGISTRAR_ID
            ):
                continue
            ident = pid.get("identifier")
            if isinstance(ident, int) and not isinstance(ident, bool) and 0 <= ident < 10**9:
                ident = str(ident)  # some registries publish the number as a number
            text = _text(ident).strip()
            iana_id = text if text.isascii() and text.isdigit() and len(text) <= 9 else None
            if iana_id is not None and int(iana_id) in _RESERVED_IANA_IDS:
                iana_id = None
        return name, iana_id
    return None, None


def _related_rdap_link(links: object) -> str | None:
    if not isinstance(links, list):
        return None
    for link in links:
        if not isinstance(link, dict) or link.get("rel") != "related":
            continue
        href = link.get("href")
        ctype = _text(link.get("type")).lower()
        if (
            isinstance(href, str)
            and href.startswith("http")
            and "rdap" in ctype
            and "/domain/" in href
        ):
            return href
    return None


def _nameservers(raw: object) -> tuple[str, ...] | None:
    if not isinstance(raw, list):
        return None
    names = set()
    for ns in raw:
        if isinstance(ns, dict) and isinstance(ns.get("ldhName"), str):
            host = normalise_host(ns["ldhName"])
            if host:
                names.add(host)
    return tuple(sorted(names))


def _delegation_signed(raw: object) -> bool | None:
    if isinstance(raw, dict) and isinstance(raw.get("delegationSigned"), bool):
        return bool(raw["delegationSigned"])
    return None


def _events(raw: object, action: str) -> Iterable[object]:
    if not isinstance(raw, list):
        return []
    return [
        e.get("eventDate")
        for e in raw
        if isinstance(e, dict) and _text(e.get("eventAction")).strip().lower() == action
    ]


def _latest(raw: object, action: str, warnings: list[str]) -> datetime | None:
    best: datetime | None = None
    for date_raw in _events(raw, action):
        value, warning = parse_date(date_raw)
        if warning:
            warnings.append(f"{action}: {warning}")
        if value is not None and (best is None or value > best):
            best = value
    return best


def _text(value: object) -> str:
    """A JSON string as is; anything else (number, list, null) as ''. Never str() on remote
    values: a deep list overflows repr(), a 5,000-digit integer makes str() raise."""
    return value if isinstance(value, str) else ""


def _short(value: object) -> str:
    """A remote value for an error message: bounded, and never a recursive repr()."""
    if isinstance(value, str):
        return repr(value[:60])
    if isinstance(value, bool | float) or (isinstance(value, int) and abs(value) < 10**18):
        return repr(value)
    return type(value).__name__


def parse_domain(payload: object) -> Registration:
    """Parse one RDAP domain response body. Raises InvalidResponse if it is not a domain object,
    and nothing else whatever the value (tests/test_fuzz_rdap.py)."""
    try:
        return _parse_domain(payload)
    except InvalidResponse:
        raise
    except (RecursionError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        # Last line of defence: the helpers check every type they use, so this is a bug in
        # them -- but a bug a remote server could trigger must cost one lookup, not the check.
        raise InvalidResponse(f"unreadable domain object ({type(exc).__name__})") from exc


def _parse_domain(payload: object) -> Registration:
    if not isinstance(payload, dict):
        raise InvalidResponse("body is not a JSON object")
    if "errorCode" in payload and "ldhName" not in payload:
        raise InvalidResponse(f"RDAP error object {_short(payload.get('errorCode'))}")
    ocn = payload.get("objectClassName")
    if ocn is not None and _text(ocn).lower() != "domain":
        raise InvalidResponse(f"objectClassName is {_short(ocn)}, not 'domain'")
    name_raw = payload.get("ldhName") or payload.get("unicodeName")
    name = normalise_host(name_raw) if isinstance(name_raw, str) else None
    if name is None:
        raise InvalidResponse("no usable ldhName")

    warnings: list[str] = []
    statuses_raw = payload.get("status")
    statuses = (
        tuple(
            sorted({normalise_status(s) for s in statuses_raw if isinstance(s, str) and s.strip()})
        )
        if isinstance(statuses_raw, list)
        else ()
    )
    events = payload.get("events")
    registrar, iana_id = _registrar(payload.get("entities"))
    redacted_raw = payload.get("redacted")
    redacted = tuple(
        field_name
        for item in (redacted_raw if isinstance(redacted_raw, list) else ())
        if isinstance(item, dict) and isinstance(item.get("name"), dict)
        # (the walrus binds in the function's scope: not `name`, which is the domain's)
        if (field_name := _text(item["name"].get("type")) or _text(item["name"].get("description")))
    )
    # Informational only: its date oddities are not worth a data-oddity warning of their own.
    last_changed = _latest(events, "last changed", [])
    return Registration(
        name=name,
        expiry=_latest(events, "expiration", warnings),
        registrar_expiry=_latest(events, "registrar expiration", warnings),
        statuses=statuses,
        nameservers=_nameservers(payload.get("nameservers")),
        dnssec_signed=_delegation_signed(payload.get("secureDNS")),
        registrar=registrar,
        registrar_iana_id=iana_id,
        contacts=_contacts(payload.get("entities")),
        registrar_link=_related_rdap_link(payload.get("links")),
        redacted=redacted,
        last_changed=last_changed,
        warnings=tuple(warnings),
    )


def merge_registrar(registry: Registration, registrar: Registration) -> Registration:
    """Combine a registry answer with the registrar's: the registry wins on every conflict.

    The registrar contributes contacts the registry does not publish (thin registries) and its own
    billing expiry, which is exported separately because it can differ from the registry's.
    """
    registry_real = {c.role for c in registry.contacts if c.kind == "real"}
    from_registrar = [c for c in registrar.contacts if c.role not in registry_real]
    covered = registry_real | {c.role for c in from_registrar}
    kept = [c for c in registry.contacts if c.kind == "real" or c.role not in covered]
    own_expiry = registrar.registrar_expiry or registrar.expiry
    return replace(
        registry,
        registrar_expiry=registry.registrar_expiry or own_expiry,
        registrar=registry.registrar or registrar.registrar,
        registrar_iana_id=registry.registrar_iana_id or registrar.registrar_iana_id,
        nameservers=registry.nameservers
        if registry.nameservers is not None
        else registrar.nameservers,
        contacts=tuple(kept + from_registrar),
        redacted=tuple(sorted(set(registry.redacted) | set(registrar.redacted))),
        last_changed=registry.last_changed or registrar.last_changed,
        warnings=registry.warnings + tuple(f"registrar: {w}" for w in registrar.warnings),
    )
