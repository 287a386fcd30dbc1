"""What `domainwatch check` prints: a verdict per domain, as a table or JSON.

The same rules that drive the alerts decide "needs attention" here, so an operator can reproduce
a page from a shell. Contact addresses are never printed: roles, mail domains and reasons are.
"""

from __future__ import annotations

import time
from typing import Any

from exporter.cctlds import builtin_table
from exporter.expiry import effective_expiry, registration_sources
from exporter.names import to_unicode
from exporter.registration import DYING_STATUSES, HOLD_STATUSES
from exporter.store import DomainStatus

EXPIRY_WARNING_DAYS = 30.0
SIGNATURE_WARNING_DAYS = 3.0  # as DomainDnssecSignaturesExpiringSoon
CHANGE_WINDOW = 86400.0  # a registrar or NS change is news for a day, as the alerts
SOURCES = ("expected", "registry", "parent", "child")


def registration_hint(s: DomainStatus) -> str | None:
    """What to do when the expiry is not watched: which config key to set, with the operator's
    server when the curated table knows one. None when an expiry is watched (or the domain is
    gone, or nothing is known yet)."""
    if effective_expiry(s)[0] is not None or (s.rdap is not None and s.rdap.registered is False):
        return None
    tld = s.name.rsplit(".", 1)[-1]
    row = builtin_table().lookup(s.name)
    manual = (
        f"add `expires: YYYY-MM-DD` (the renewal date your registrar shows) to {s.name} "
        "under `domains:`"
    )
    if s.registry_source in ("rdap", "whois") and s.rdap is not None and s.rdap.registration:
        who = row.operator if row else "the registry"
        if row is not None and row.expiry_published is False:
            return f"{who} publishes no expiry date for .{tld} domains: {manual}"
        return f"the {s.registry_source.upper()} answer of {who} has no expiry date: {manual}"
    if s.registry_source is None and s.check("rdap").error == "unsupported_tld":
        key = f"whois.servers.{tld}"
        if row is not None and row.whois_restricted:
            where = f"{key}: {row.whois_restricted} (the operator's server; {row.operator} "
            where += "answers registered clients only)"
        elif row is not None and row.whois:
            where = f"{key}: {row.whois} (the operator's server)"
        else:
            where = f"{key}: <host> or rdap.servers.{tld}: <URL> if the registry runs one"
        return f"no RDAP or WHOIS service known for .{tld}: set {where}, or {manual}"
    return None


def problems(s: DomainStatus, now: float) -> list[str]:
    out: list[str] = []
    expiry, _source = effective_expiry(s)
    if expiry is not None:
        days = (expiry.timestamp() - now) / 86400
        if days <= 0:
            out.append(f"expired {-days:.1f} days ago")
        elif days < EXPIRY_WARNING_DAYS:
            out.append(f"expires in {days:.1f} days")
    hint = registration_hint(s)
    if hint is not None and s.registry_source in ("rdap", "whois"):
        # The registry answered without a date: a known gap, like DomainExpiryNotPublished.
        # (With no source at all the domain could not be checked: failed_checks says so.)
        out.append(f"expiry not watched: {hint}")
    if s.rdap is not None:
        said = "404" if s.rdap.source == "rdap" else "not found"
        if s.rdap.registered is False:
            out.append(f"not registered (registry answered {said}, confirmed)")
        elif s.rdap.not_found_since is not None:
            out.append(f"registry answered {said} (not yet confirmed)")
        reg = s.rdap.registration
        if reg is not None:
            for st in reg.statuses:
                if st == "inactive":
                    out.append("inactive at the registry: no name servers, not delegated")
                if st in HOLD_STATUSES:
                    out.append(f"on hold ({st})")
                elif st in DYING_STATUSES:
                    out.append(f"dying ({st})")
    if s.dns is not None:
        if s.dns.delegated is False:
            out.append(f"not delegated: parent zone {s.dns.parent_zone} answers NXDOMAIN")
        if s.dns.mismatch:
            out.append("nameserver mismatch")
        if s.dns.inconsistent:
            out.append("parent and child NS sets differ")
        for ns, reason in sorted(s.dns.lame.items()):
            if reason is not None:
                out.append(f"lame nameserver {ns} ({reason})")
    out += _dnssec_problems(s, now)
    for nv in s.nsdomain.verdicts if s.nsdomain else ():
        if nv.healthy is False:
            out.append(
                f"nameserver domain {nv.nameserver_domain} is not healthy ({nv.reason}): "
                "whoever registers it answers for this domain"
            )
    changes = s.changes
    if changes.nameservers_changed_at is not None and (
        now - changes.nameservers_changed_at < CHANGE_WINDOW and not s.expected_nameservers
    ):
        old = ", ".join(changes.previous_nameservers or ()) or "-"
        out.append(f"nameservers changed {_ago(now, changes.nameservers_changed_at)} (were {old})")
    if changes.registrar_changed_at is not None and (
        now - changes.registrar_changed_at < CHANGE_WINDOW
    ):
        out.append(f"registrar changed {_ago(now, changes.registrar_changed_at)}")
    if s.email is not None:
        for v in s.email.verdicts:
            if v.deliverable is False:
                out.append(
                    f"{v.role} e-mail ({v.source}) undeliverable: @{v.mail_domain} {v.reason}"
                )
            if v.self_hosted:
                out.append(f"{v.role} e-mail is hosted on the domain itself (@{v.mail_domain})")
            if v.personal:
                out.append(
                    f"{v.role} e-mail is a personal mailbox (@{v.mail_domain}): use a role "
                    "address on a domain you control"
                )
    return out


def _dnssec_problems(s: DomainStatus, now: float) -> list[str]:
    d = s.dnssec
    if d is None:
        return []
    out = []
    if d.ds_mismatch:
        out.append("DNSSEC: no DS at the parent matches a key that signs the DNSKEY set")
    if d.signed and d.signature_expiry is not None:
        days = (d.signature_expiry - now) / 86400
        if days < SIGNATURE_WARNING_DAYS:
            out.append(f"DNSSEC signatures expire in {days:.1f} days")
    for ns, bad in sorted(d.glue_mismatch.items()):
        if bad:
            out.append(f"glue of {ns} at the parent differs from its address in the zone")
    if d.serial_drift:
        out.append(f"SOA serials differ across the nameservers by {d.serial_drift}")
    return out


def _ago(now: float, then: float) -> str:
    hours = max(0.0, now - then) / 3600
    return f"{hours:.1f} h ago"


def failed_checks(s: DomainStatus) -> list[str]:
    out = []
    for k, c in sorted(s.checks.items()):
        if c.success is not False:
            continue
        line = f"{k} check failed: {c.error}"
        hint = registration_hint(s) if c.error == "unsupported_tld" else None
        out.append(f"{line}: {hint}" if hint else line)
    return out


def verdict(s: DomainStatus, now: float) -> str:
    if problems(s, now):
        return "attention"
    # The registration check that serves the domain (rdap or whois) must have run; a domain
    # watched by its configured expiry alone has none.
    registration = s.registry_source if s.registry_source in ("rdap", "whois") else None
    if failed_checks(s) or (registration and s.check(registration).success is None):
        return "unknown"
    if s.registry_source is None and s.check("rdap").success is None:
        return "unknown"
    return "ok"


def exit_code(statuses: list[DomainStatus], now: float) -> int:
    verdicts = {verdict(s, now) for s in statuses}
    if "attention" in verdicts:
        return 1
    if "unknown" in verdicts:
        return 2
    return 0


def as_json(s: DomainStatus, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    reg = s.rdap.registration if s.rdap else None
    rdap_state = s.check("rdap")
    whois_state = s.check("whois")
    expiry, expiry_source = effective_expiry(s)
    row = builtin_table().lookup(s.name)
    out: dict[str, Any] = {
        "domain": s.name,
        "unicode": to_unicode(s.name),
        "status": verdict(s, now),
        "problems": problems(s, now) + failed_checks(s),
        # Where the registration is read from (even when that read failed), and what to do
        # when no expiry is watched.
        "registration": {
            "source": s.registry_source,
            "server": s.registry_server,
            "sources": list(registration_sources(s)),
            "expiry_source": expiry_source,
            "expiry_published": row.expiry_published if row else None,
            "operator": row.operator if row else None,
            "hint": registration_hint(s),
        },
        "whois": {"success": whois_state.success, "error": whois_state.error},
        "rdap": {
            "success": rdap_state.success,
            "error": rdap_state.error,
            "registered": s.rdap.registered if s.rdap else None,
            # The watched expiry: the registry's, else the configured one (expiry_source).
            "expiry": expiry.isoformat() if expiry else None,
            "expiry_days": round((expiry.timestamp() - now) / 86400, 2) if expiry else None,
            "registry_expiry": reg.expiry.isoformat() if reg and reg.expiry else None,
            "registrar_expiry": reg.registrar_expiry.isoformat()
            if reg and reg.registrar_expiry
            else None,
            "statuses": list(reg.statuses) if reg else [],
            "registrar": reg.registrar if reg else None,
            "registrar_iana_id": reg.registrar_iana_id if reg else None,
            "nameservers": list(reg.nameservers or ()) if reg else [],
            "rdap_server": s.rdap.server if s.rdap else None,
            "contacts": [{"role": c.role, "kind": c.kind} for c in reg.contacts] if reg else [],
        },
    }
    dns_state = s.check("dns")
    out["dns"] = {
        "success": dns_state.success,
        "error": dns_state.error,
        "parent_zone": s.dns.parent_zone if s.dns else None,
        "delegated": s.dns.delegated if s.dns else None,
        "mismatch": s.dns.mismatch if s.dns else None,
        "inconsistent": s.dns.inconsistent if s.dns else None,
        "nameservers": _ns_sets(s),
        "lame": {ns: r for ns, r in sorted(s.dns.lame.items()) if r} if s.dns else {},
    }
    dnssec_state = s.check("dnssec")
    d = s.dnssec
    out["dnssec"] = {
        "success": dnssec_state.success,
        "error": dnssec_state.error,
        "signed": d.signed if d else None,
        "ds_mismatch": d.ds_mismatch if d else None,
        "signature_expiry": d.signature_expiry if d else None,
        "serial_drift": d.serial_drift if d else None,
        "glue_mismatch": dict(sorted(d.glue_mismatch.items())) if d else {},
    }
    out["nameserver_domains"] = [
        {"nameserver_domain": nv.nameserver_domain, "healthy": nv.healthy, "reason": nv.reason}
        for nv in (s.nsdomain.verdicts if s.nsdomain else ())
    ]
    out["changes"] = {
        "nameservers_changed_at": s.changes.nameservers_changed_at,
        "previous_nameservers": list(s.changes.previous_nameservers or ()),
        "registrar_changed_at": s.changes.registrar_changed_at,
        "transfer_lock": reg.transfer_locked if reg and reg.statuses else None,
    }
    email_state = s.check("email")
    out["email"] = {
        "success": email_state.success,
        "error": email_state.error,
        "contacts": [
            {
                "role": v.role,
                "source": v.source,
                "mail_domain": v.mail_domain,
                "deliverable": v.deliverable,
                "reason": v.reason,
                "self_hosted": v.self_hosted,
                "personal": v.personal,
            }
            for v in (s.email.verdicts if s.email else ())
        ],
    }
    return out


def _ns_sets(s: DomainStatus) -> dict[str, list[str] | None]:
    reg = s.rdap.registration if s.rdap else None
    return {
        "expected": list(s.expected_nameservers) or None,
        "registry": list(reg.nameservers) if reg and reg.nameservers is not None else None,
        "parent": list(s.dns.parent) if s.dns and s.dns.parent is not None else None,
        "child": list(s.dns.child) if s.dns and s.dns.child is not None else None,
    }


def as_table(statuses: list[DomainStatus], now: float | None = None) -> str:
    now = time.time() if now is None else now
    blocks = []
    for s in statuses:
        j = as_json(s, now)
        r = j["rdap"]
        reg_info = j["registration"]
        expiry = "unknown"
        if r["expiry"]:
            expiry = f"{r['expiry'][:10]} ({r['expiry_days']:.1f} days)"
            if reg_info["expiry_source"] == "config":
                expiry += " from domains[].expires"
        elif r["registered"] is False:
            expiry = "not registered"
        elif reg_info["expiry_published"] is False:
            expiry = f"not published by {reg_info['operator']}"
        lines = [
            f"{s.name}"
            + (f" ({j['unicode']})" if j["unicode"] != s.name else "")
            + f"  [{j['status'].upper()}]",
            f"  expiry      {expiry}",
            f"  statuses    {', '.join(r['statuses']) or '-'}",
            f"  registrar   {r['registrar'] or '-'}"
            + (f" (IANA {r['registrar_iana_id']})" if r["registrar_iana_id"] else ""),
            f"  source      {reg_info['source'] or '-'} {reg_info['server'] or ''}".rstrip(),
        ]
        sets = j["dns"]["nameservers"]
        names = sorted({ns for v in sets.values() if v for ns in v})
        if names:
            col = max(max(len(n) for n in names), 10)
            lines.append(f"  {'nameservers':<{col + 2}}  " + "  ".join(f"{x:<8}" for x in SOURCES))
            for ns in names:
                marks = "  ".join(f"{_mark(ns, sets[src]):<8}" for src in SOURCES)
                lame = j["dns"]["lame"].get(ns)
                lines.append(f"    {ns:<{col}}  {marks}" + (f"  LAME: {lame}" if lame else ""))
        flags = []
        if s.dns and s.dns.mismatch is not None:
            flags.append(f"mismatch={int(s.dns.mismatch)}")
        if s.rdap and s.rdap.registration and s.rdap.registration.statuses:
            flags.append(f"hold={int(s.rdap.registration.on_hold)}")
            flags.append(f"transfer_lock={int(s.rdap.registration.transfer_locked)}")
        if s.dnssec and s.dnssec.signed is not None:
            flags.append(f"dnssec_signed={int(s.dnssec.signed)}")
            if s.dnssec.ds_mismatch is not None:
                flags.append(f"ds_mismatch={int(s.dnssec.ds_mismatch)}")
        for v in j["email"]["contacts"]:
            d = "unknown" if v["deliverable"] is None else int(v["deliverable"])
            flags.append(f"{v['role']}_email={d}")
        lines.append(f"  flags       {' '.join(flags) or '-'}")
        for v in j["email"]["contacts"]:
            verdict_text = {True: "deliverable", False: "UNDELIVERABLE", None: "unknown"}[
                v["deliverable"]
            ]
            lines.append(
                f"  contact     {v['role']} ({v['source']}) @{v['mail_domain']}: "
                f"{verdict_text} ({v['reason']})"
            )
        for p in j["problems"]:
            lines.append(f"  problem     {p}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _mark(ns: str, members: list[str] | None) -> str:
    if members is None:
        return "?"  # that source was not measured
    return "yes" if ns in members else "no"
