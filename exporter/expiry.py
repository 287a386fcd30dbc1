"""Which expiry date a domain is watched by, and where its registration data came from.

The registry's own date (RDAP or WHOIS: the earlier of registry and registrar expiration) always
wins; `domains[].expires` fills in only when no registry source gives a date (DENIC, EURid and
SWITCH publish none). A registration confirmed gone has no expiry at all, manual or not.
Shared by the collector (/metrics) and report (`domainwatch check`), so both say the same.
"""

from __future__ import annotations

from datetime import datetime

from exporter.store import DomainStatus


def effective_expiry(s: DomainStatus) -> tuple[datetime | None, str | None]:
    """(date, source): source is "rdap" or "whois" for a registry date, "config" for the
    manual one, None when there is no date."""
    rdap = s.rdap
    if rdap is not None and rdap.registered is False:
        return None, None
    reg = rdap.registration if rdap is not None else None
    paid_until = reg.paid_until if reg is not None else None
    if paid_until is not None and rdap is not None:
        return paid_until, rdap.source
    if s.manual_expiry is not None:
        return s.manual_expiry, "config"
    return None, None


def registration_sources(s: DomainStatus) -> tuple[str, ...]:
    """Every source the exported registration data came from: the registry protocol that
    answered (rdap/whois), and "config" when the expiry is the manual one."""
    out: list[str] = []
    if s.rdap is not None and s.rdap.registered is not None:
        out.append(s.rdap.source)
    if effective_expiry(s)[1] == "config":
        out.append("config")
    return tuple(out)
