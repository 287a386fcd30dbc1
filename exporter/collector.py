"""Turns a store snapshot into metric families on every scrape. All metric names live here.

No I/O happens in `collect()`: it reads the last known results that the background checks left
in the store. A value never measured is left out, never exported as a made-up 0 or 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.store import CHECKS, DomainStatus, StatusStore

_CACHED = " Last known value from a background check, not measured at scrape time."


def _family(name: str, doc: str) -> Metric:
    return Metric(name, doc, "gauge")


class DomainCollector(Collector):
    """Per-domain gauges. Example exposition for one held domain:

    domain_expiry_days{domain="example.com"} 41.5
    domain_hold{domain="example.com"} 1
    domain_status{domain="example.com",status="client hold"} 1
    domain_check_success{check="rdap",domain="example.com"} 1
    """

    def __init__(self, store: StatusStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def describe(self) -> list[Metric]:
        # Returning nothing makes registration cheap: prometheus_client would otherwise call
        # collect() at register time to learn the names.
        return []

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        f = {
            "expiry_days": _family(
                "domain_expiry_days",
                "Days until the registry's expiration date (negative once past)." + _CACHED,
            ),
            "expiry_ts": _family(
                "domain_expiry_timestamp_seconds",
                "Registry expiration date as Unix time." + _CACHED,
            ),
            "registrar_expiry_ts": _family(
                "domain_registrar_expiry_timestamp_seconds",
                "The registrar's own expiration date (registrar RDAP) as Unix time." + _CACHED,
            ),
            "registered": _family(
                "domain_registered",
                "1 if the registry knows the domain, 0 if its RDAP answered 404." + _CACHED,
            ),
            "hold": _family(
                "domain_hold",
                "1 if 'client hold' or 'server hold' is among the RDAP statuses." + _CACHED,
            ),
            "status": _family(
                "domain_status",
                "1 for every RDAP status present (RFC 8056 names)." + _CACHED,
            ),
            "info": _family(
                "domain_info",
                "String facts of the registration: registrar and RDAP server." + _CACHED,
            ),
            "success": _family(
                "domain_check_success", "1 if the last attempt of the check succeeded."
            ),
            "last_success": _family(
                "domain_check_last_success_timestamp_seconds",
                "Unix time of the last successful attempt of the check.",
            ),
            "last_attempt": _family(
                "domain_check_last_attempt_timestamp_seconds",
                "Unix time of the last attempt of the check.",
            ),
            "error": _family(
                "domain_check_error_info",
                "1 while the last attempt of the check failed, with the reason.",
            ),
            "mismatch": _family(
                "domain_nameserver_mismatch",
                "1 if the parent zone's delegation differs from the expected, registry or child "
                "NS set; absent when the delegation could not be measured." + _CACHED,
            ),
            "ns_info": _family(
                "domain_nameserver_info",
                "1 per nameserver reported by a source (expected, registry, parent, child)."
                + _CACHED,
            ),
            "lame": _family(
                "domain_nameserver_lame",
                "1 if a delegated nameserver does not answer authoritatively for the domain."
                + _CACHED,
            ),
            "delegated": _family(
                "domain_delegated",
                "1 if the parent zone delegates the domain, 0 if it answers NXDOMAIN." + _CACHED,
            ),
            "deliverable": _family(
                "domain_contact_email_deliverable",
                "1 if the contact's mail domain can receive mail, 0 if it cannot; absent when "
                "unknown." + _CACHED,
            ),
            "self_hosted": _family(
                "domain_contact_email_self_hosted",
                "1 if the contact's mail domain is the monitored domain itself." + _CACHED,
            ),
        }
        for status in self._store.snapshot():
            _add_domain(f, status, now)
        yield from f.values()


def _add_domain(f: Mapping[str, Metric], s: DomainStatus, now: float) -> None:
    base = {**s.labels, "domain": s.name}

    def add(key: str, value: float, **extra: str) -> None:
        metric = f[key]
        metric.add_sample(metric.name, {**base, **extra} if extra else base, value)

    for kind in CHECKS:
        c = s.checks.get(kind)
        if c is None or c.success is None:
            continue
        add("success", 1.0 if c.success else 0.0, check=kind)
        if c.last_attempt is not None:
            add("last_attempt", c.last_attempt, check=kind)
        if c.last_success is not None:
            add("last_success", c.last_success, check=kind)
        if not c.success and c.error:
            add("error", 1.0, check=kind, reason=c.error)

    if s.rdap is not None:
        add("registered", 1.0 if s.rdap.registered else 0.0)
        reg = s.rdap.registration
        if reg is not None:
            if reg.expiry is not None:
                ts = reg.expiry.timestamp()
                add("expiry_ts", ts)
                add("expiry_days", round((ts - now) / 86400.0, 4))
            if reg.registrar_expiry is not None:
                add("registrar_expiry_ts", reg.registrar_expiry.timestamp())
            # Statuses are only known when the registry listed some; an absent list is not
            # "no hold", so the hold flag is left out too.
            if reg.statuses:
                add("hold", 1.0 if reg.on_hold else 0.0)
                for st in reg.statuses:
                    add("status", 1.0, status=st)
            add(
                "info",
                1.0,
                registrar=reg.registrar or "",
                registrar_iana_id=reg.registrar_iana_id or "",
                rdap_server=s.rdap.server or "",
            )

    for ns in s.expected_nameservers:
        add("ns_info", 1.0, source="expected", nameserver=ns)
    if s.rdap is not None and s.rdap.registration is not None:
        for ns in s.rdap.registration.nameservers or ():
            add("ns_info", 1.0, source="registry", nameserver=ns)
    if s.dns is not None:
        d = s.dns
        for ns in d.parent or ():
            add("ns_info", 1.0, source="parent", nameserver=ns)
        for ns in d.child or ():
            add("ns_info", 1.0, source="child", nameserver=ns)
        if d.delegated is not None:
            add("delegated", 1.0 if d.delegated else 0.0)
        if d.mismatch is not None:
            add("mismatch", 1.0 if d.mismatch else 0.0)
        for ns, reason in sorted(d.lame.items()):
            add("lame", 0.0 if reason is None else 1.0, nameserver=ns)

    if s.email is not None:
        for role, ok in sorted(s.email.by_role().items()):
            if ok is not None:
                add("deliverable", 1.0 if ok else 0.0, role=role)
        self_hosted: dict[str, bool] = {}
        for v in s.email.verdicts:
            self_hosted[v.role] = self_hosted.get(v.role, False) or v.self_hosted
        for role, flag in sorted(self_hosted.items()):
            add("self_hosted", 1.0 if flag else 0.0, role=role)
