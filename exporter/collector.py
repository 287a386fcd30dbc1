"""Turns a store snapshot into metric families on every scrape. All metric names live here.

No I/O happens in `collect()`: it reads the last known results that the background checks left
in the store. A value never measured is left out, never exported as a made-up 0 or 1.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.expiry import effective_expiry, registration_sources
from exporter.store import CHECKS, DomainStatus, StatusStore

_CACHED = " Last known value from a background check, not measured at scrape time."


# (key, metric name, HELP). The order here is the order on /metrics.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    (
        "expiry_days",
        "domain_expiry_days",
        "Days until the registration stops being paid for: the earlier of the registry's and "
        "the registrar's expiration, or the configured `expires:` when the registry publishes "
        "none (negative once past)." + _CACHED,
    ),
    (
        "expiry_ts",
        "domain_expiry_timestamp_seconds",
        "When the registration stops being paid for (the earlier of the registry's and the "
        "registrar's expiration, or the configured `expires:` when the registry publishes "
        "none) as Unix time." + _CACHED,
    ),
    (
        "registry_expiry_ts",
        "domain_registry_expiry_timestamp_seconds",
        "The registry's own expiration date as Unix time (auto-renewing registries move it "
        "a year ahead at expiry)." + _CACHED,
    ),
    (
        "registrar_expiry_ts",
        "domain_registrar_expiry_timestamp_seconds",
        "The registrar's own expiration date (registrar RDAP) as Unix time." + _CACHED,
    ),
    (
        "registered",
        "domain_registered",
        "1 if the registry knows the domain, 0 if its RDAP (404) or WHOIS (no match) said it "
        "does not, confirmed by a second answer a hold interval later or by an authoritative "
        "NXDOMAIN at the parent." + _CACHED,
    ),
    (
        "source",
        "domain_registration_source",
        "1 per source of the registration data: rdap or whois (the registry protocol that "
        "answered), config (the expiry is the configured `expires:`)." + _CACHED,
    ),
    (
        "hold",
        "domain_hold",
        "1 if 'client hold' or 'server hold' is among the RDAP statuses." + _CACHED,
    ),
    ("status", "domain_status", "1 for every RDAP status present (RFC 8056 names)." + _CACHED),
    (
        "transfer_lock",
        "domain_transfer_lock",
        "1 if 'client transfer prohibited' or 'server transfer prohibited' is among the RDAP "
        "statuses, 0 if statuses are listed without either." + _CACHED,
    ),
    (
        "last_changed",
        "domain_last_changed_timestamp_seconds",
        "The registry's RDAP 'last changed' event as Unix time." + _CACHED,
    ),
    (
        "ns_changed",
        "domain_nameservers_changed_timestamp_seconds",
        "Unix time domainwatch observed the registry's or the parent zone's nameserver set "
        "change (not set by the first observation; survives restarts through --state.file).",
    ),
    (
        "registrar_changed",
        "domain_registrar_changed_timestamp_seconds",
        "Unix time domainwatch observed the sponsoring registrar change (not set by the first "
        "observation; survives restarts through --state.file).",
    ),
    (
        "info",
        "domain_info",
        "String facts of the registration: registrar and RDAP server." + _CACHED,
    ),
    ("success", "domain_check_success", "1 if the last attempt of the check succeeded."),
    (
        "last_success",
        "domain_check_last_success_timestamp_seconds",
        "Unix time of the last successful attempt of the check.",
    ),
    (
        "last_attempt",
        "domain_check_last_attempt_timestamp_seconds",
        "Unix time of the last attempt of the check.",
    ),
    (
        "error",
        "domain_check_error_info",
        "1 while the last attempt of the check failed, with the reason.",
    ),
    (
        "mismatch",
        "domain_nameserver_mismatch",
        "1 if the parent zone's delegation differs from the expected NS set (if configured), "
        "else from the registry's (confirmed by a fresh RDAP read); absent when the domain is "
        "not delegated or the delegation could not be measured." + _CACHED,
    ),
    (
        "inconsistent",
        "domain_nameserver_inconsistent",
        "1 if the parent zone's NS set differs from the child zone's apex NS set." + _CACHED,
    ),
    (
        "ns_info",
        "domain_nameserver_info",
        "1 per nameserver reported by a source (expected, registry, parent, child)." + _CACHED,
    ),
    (
        "ns_domain_healthy",
        "domain_nameserver_domain_healthy",
        "1 if the registration of a nameserver's registrable domain is healthy, 0 if it is "
        "unregistered, expired, on hold or pending delete; absent when unknown." + _CACHED,
    ),
    (
        "lame",
        "domain_nameserver_lame",
        "1 if a delegated nameserver does not answer authoritatively for the domain." + _CACHED,
    ),
    (
        "delegated",
        "domain_delegated",
        "1 if the parent zone delegates the domain, 0 if its servers answer NXDOMAIN "
        "authoritatively." + _CACHED,
    ),
    (
        "dnssec_signed",
        "domain_dnssec_signed",
        "1 if the parent zone publishes DS records for the domain, 0 if its servers answer "
        "authoritatively that there are none." + _CACHED,
    ),
    (
        "dnssec_ds_mismatch",
        "domain_dnssec_ds_mismatch",
        "1 if no DS at the parent names a DNSKEY that a delegated server serves and that signs "
        "its DNSKEY RRset (validating resolvers then fail the domain); absent when not signed."
        + _CACHED,
    ),
    (
        "dnssec_expiry",
        "domain_dnssec_signature_expiry_timestamp_seconds",
        "The earliest expiration of the RRSIGs over the apex SOA, NS and DNSKEY RRsets across "
        "the delegated servers, as Unix time (signed domains only)." + _CACHED,
    ),
    (
        "dnssec_registry",
        "domain_dnssec_registry_disagrees",
        "1 if the registry's RDAP secureDNS.delegationSigned differs from whether the parent "
        "publishes DS (confirmed by an RDAP read after the difference was first seen)." + _CACHED,
    ),
    (
        "glue_mismatch",
        "domain_nameserver_glue_mismatch",
        "1 if the parent's glue addresses for an in-domain nameserver differ from the addresses "
        "the domain's own servers give it; absent for nameservers outside the domain." + _CACHED,
    ),
    (
        "soa_drift",
        "domain_soa_serial_drift",
        "How far the newest SOA serial among the delegated servers is ahead of the oldest "
        "(RFC 1982 serial arithmetic); 0 when they agree." + _CACHED,
    ),
    (
        "deliverable",
        "domain_contact_email_deliverable",
        "1 if the contact's mail domain can receive mail, 0 if it cannot; absent when unknown."
        + _CACHED,
    ),
    (
        "self_hosted",
        "domain_contact_email_self_hosted",
        "1 if the contact's mail domain is the monitored domain itself." + _CACHED,
    ),
    (
        "personal",
        "domain_contact_email_personal",
        "1 if the contact's mailbox is at a consumer mail provider (a person's own, not a role "
        "address), else 0." + _CACHED,
    ),
)
_NAMES = {key: name for key, name, _doc in FAMILIES}
# Only this family depends on the scrape time; everything else is a pure function of the
# (immutable) DomainStatus and can be rendered once per result.
_TIME_DEPENDENT = "expiry_days"

Sample = tuple[str, dict[str, str], float]

# Label values from remote data (registrar names, statuses) are cut to this many characters,
# after control characters are removed: a hostile registry must not inflate every scrape.
MAX_REMOTE_LABEL = 200
# Control characters, and lone UTF-16 surrogates (from WHOIS text) that cannot be encoded.
_CONTROL = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000)])


# Nameserver series per domain and source: a hostile delegation may name 1,000 servers, which
# must not become 1,000 series (the verdicts still compare the whole sets).
MAX_NAMESERVER_SERIES = 16


def _capped(names: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(sorted(names or ())[:MAX_NAMESERVER_SERIES])


def remote_label(value: str | None) -> str:
    """A label value taken from a server we do not control."""
    if not value:
        return ""
    return value.translate(_CONTROL)[:MAX_REMOTE_LABEL]


class DomainCollector(Collector):
    """Per-domain gauges. Example exposition for one held domain:

    domain_expiry_days{domain="example.com"} 41.5
    domain_hold{domain="example.com"} 1
    domain_status{domain="example.com",status="client hold"} 1
    domain_check_success{check="rdap",domain="example.com"} 1

    `collect()` serves prometheus_client registries; `exposition()` renders the same text
    directly with a per-domain cache, because at 10,000 domains (330,000 samples) building
    Sample objects on every scrape costs seconds of CPU under the GIL, stalling the checks.
    """

    def __init__(self, store: StatusStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._blocks: list[_Block] = []
        self._headers: dict[tuple[str, bool], bytes] = {}

    def describe(self) -> list[Metric]:
        # Returning nothing makes registration cheap: prometheus_client would otherwise call
        # collect() at register time to learn the names.
        return []

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        families = {key: Metric(name, doc, "gauge") for key, name, doc in FAMILIES}
        for status in self._store.snapshot():
            for key, labels, value in _domain_samples(status, now):
                metric = families[key]
                metric.add_sample(metric.name, labels, value)
        yield from families.values()

    def exposition(self) -> bytes:
        """The text format (0.0.4) of exactly what collect() yields, byte for byte."""
        return b"".join(self.exposition_chunks())

    def exposition_chunks(self, *, gzipped: bool = False) -> list[bytes]:
        """The exposition as a list of chunks to send in order, each cached until a domain of
        its block changes. With `gzipped`, each chunk is a complete gzip member: a gzip stream
        may be a concatenation of members (RFC 1952 §2.2), which Prometheus' decoder reads, so
        a scrape never recompresses what did not change.

        The text format wants every sample of a family together, so the cache is a grid:
        blocks of BLOCK_SIZE domains (by position) x families. A scrape costs O(blocks x
        families) joins plus the re-rendering of changed blocks, never O(domains x samples).
        `domain_expiry_days`, the one time-dependent family, is re-rendered per block at
        most once per EXPIRY_RENDER_SECONDS (its value then lags by at most that much).
        """
        now = self._clock()
        snapshot = self._store.snapshot()
        blocks: list[_Block] = []
        with self._lock:  # the HTTP server may serve two scrapes at once
            for index in range(0, len(snapshot), BLOCK_SIZE):
                statuses = tuple(snapshot[index : index + BLOCK_SIZE])
                position = index // BLOCK_SIZE
                block = self._blocks[position] if position < len(self._blocks) else None
                if block is None or block.statuses != statuses:
                    block = _Block(statuses)
                blocks.append(block)
            self._blocks = blocks  # drops blocks of domains removed by a reload
            out: list[bytes] = []
            for key, name, doc in FAMILIES:
                out.append(self._header(key, name, doc, gzipped))
                for block in blocks:
                    chunk = block.chunk(key, now, gzipped)
                    if chunk:
                        out.append(chunk)
        return out

    def _header(self, key: str, name: str, doc: str, gzipped: bool) -> bytes:
        cached = self._headers.get((key, gzipped))
        if cached is None:
            cached = _header(name, doc)
            if gzipped:
                cached = _gzip(cached)
            self._headers[(key, gzipped)] = cached
        return cached


BLOCK_SIZE = 256  # domains per cached block: small enough that one change re-renders little
EXPIRY_RENDER_SECONDS = 60.0  # 60 s is 0.0007 days, below the 4 decimals exported


class _Block:
    """The rendered samples of up to BLOCK_SIZE consecutive domains, per family."""

    __slots__ = ("_expiry", "_gz", "_plain", "statuses")

    def __init__(self, statuses: tuple[DomainStatus, ...]) -> None:
        self.statuses = statuses
        self._plain: dict[str, bytes] | None = None
        self._gz: dict[str, bytes] = {}
        self._expiry: tuple[int, bytes, bytes | None] | None = None

    def chunk(self, key: str, now: float, gzipped: bool) -> bytes:
        if key == _TIME_DEPENDENT:
            return self._expiry_chunk(now, gzipped)
        if self._plain is None:
            lines: dict[str, list[str]] = {}
            for status in self.statuses:
                for k, labels, value in _domain_samples(status, now, with_expiry_days=False):
                    lines.setdefault(k, []).append(_line(_NAMES[k], labels, value))
            self._plain = {k: "".join(v).encode() for k, v in lines.items()}
        plain = self._plain.get(key, b"")
        if not gzipped or not plain:
            return plain
        gz = self._gz.get(key)
        if gz is None:
            gz = self._gz[key] = _gzip(plain)
        return gz

    def _expiry_chunk(self, now: float, gzipped: bool) -> bytes:
        bucket = int(now // EXPIRY_RENDER_SECONDS)
        if self._expiry is None or self._expiry[0] != bucket:
            name = _NAMES[_TIME_DEPENDENT]
            plain = "".join(
                _line(name, labels, value)
                for status in self.statuses
                for _k, labels, value in _expiry_days(status, now)
            ).encode()
            self._expiry = (bucket, plain, None)
        bucket, plain, gz = self._expiry
        if not gzipped or not plain:
            return plain
        if gz is None:
            gz = _gzip(plain)
            self._expiry = (bucket, plain, gz)
        return gz


def _gzip(data: bytes) -> bytes:
    # Level 1: the text format compresses ~25x even so, and a cold scrape of 100k domains
    # must not spend tens of seconds compressing.
    return gzip.compress(data, compresslevel=1, mtime=0)


def _header(name: str, doc: str) -> bytes:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} gauge\n".encode()


def _line(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(
        '{}="{}"'.format(k, v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\""))
        for k, v in sorted(labels.items())
    )
    return f"{name}{{{inner}}} {floatToGoString(value)}\n"  # type: ignore[no-untyped-call]


def _expiry_days(s: DomainStatus, now: float) -> list[Sample]:
    paid_until, _source = effective_expiry(s)
    if paid_until is None:
        return []
    days = round((paid_until.timestamp() - now) / 86400.0, 4)
    return [("expiry_days", {**s.labels, "domain": s.name}, days)]


def _domain_samples(s: DomainStatus, now: float, *, with_expiry_days: bool = True) -> list[Sample]:
    """Every sample of one domain, in family order within this domain."""
    base = {**s.labels, "domain": s.name}
    out: list[Sample] = list(_expiry_days(s, now)) if with_expiry_days else []

    def add(key: str, value: float, **extra: str) -> None:
        out.append((key, {**base, **extra} if extra else base, value))

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

    expiry, _source = effective_expiry(s)
    if expiry is not None:
        add("expiry_ts", expiry.timestamp())
    if s.rdap is not None and s.rdap.registered is not None:
        add("registered", 1.0 if s.rdap.registered else 0.0)
    for source in registration_sources(s):
        add("source", 1.0, source=source)
    if s.rdap is not None:
        reg = s.rdap.registration
        if reg is not None:
            if reg.expiry is not None:
                add("registry_expiry_ts", reg.expiry.timestamp())
            if reg.registrar_expiry is not None:
                add("registrar_expiry_ts", reg.registrar_expiry.timestamp())
            # Statuses are only known when the registry listed some; an absent list is not
            # "no hold", so the hold flag is left out too.
            if reg.statuses:
                add("hold", 1.0 if reg.on_hold else 0.0)
                for st in sorted({remote_label(st) for st in reg.statuses}):
                    add("status", 1.0, status=st)
                add("transfer_lock", 1.0 if reg.transfer_locked else 0.0)
            if reg.last_changed is not None:
                add("last_changed", reg.last_changed.timestamp())
            add(
                "info",
                1.0,
                registrar=remote_label(reg.registrar),
                registrar_iana_id=remote_label(reg.registrar_iana_id),
                rdap_server=remote_label(s.rdap.server),
            )

    if s.changes.nameservers_changed_at is not None:
        add("ns_changed", s.changes.nameservers_changed_at)
    if s.changes.registrar_changed_at is not None:
        add("registrar_changed", s.changes.registrar_changed_at)
    for ns in _capped(s.expected_nameservers):
        add("ns_info", 1.0, source="expected", nameserver=ns)
    # The set before a nameserver change, for a day (changes.PREVIOUS_KEEP_SECONDS).
    for ns in _capped(s.changes.previous_nameservers):
        add("ns_info", 1.0, source="previous", nameserver=remote_label(ns))
    if s.nsdomain is not None:
        for nsd in s.nsdomain.verdicts:
            if nsd.healthy is not None:
                value = 1.0 if nsd.healthy else 0.0
                add("ns_domain_healthy", value, nameserver_domain=nsd.nameserver_domain)
    if s.rdap is not None and s.rdap.registration is not None:
        for ns in _capped(s.rdap.registration.nameservers):
            add("ns_info", 1.0, source="registry", nameserver=remote_label(ns))
    if s.dns is not None:
        d = s.dns
        for ns in _capped(d.parent):
            add("ns_info", 1.0, source="parent", nameserver=remote_label(ns))
        for ns in _capped(d.child):
            add("ns_info", 1.0, source="child", nameserver=remote_label(ns))
        if d.delegated is not None:
            add("delegated", 1.0 if d.delegated else 0.0)
        if d.mismatch is not None:
            add("mismatch", 1.0 if d.mismatch else 0.0)
        if d.inconsistent is not None:
            add("inconsistent", 1.0 if d.inconsistent else 0.0)
        for ns, reason in sorted(d.lame.items())[:MAX_NAMESERVER_SERIES]:
            add("lame", 0.0 if reason is None else 1.0, nameserver=remote_label(ns))

    if s.dnssec is not None:
        sec = s.dnssec
        if sec.signed is not None:
            add("dnssec_signed", 1.0 if sec.signed else 0.0)
        if sec.ds_mismatch is not None:
            add("dnssec_ds_mismatch", 1.0 if sec.ds_mismatch else 0.0)
        if sec.signature_expiry is not None:
            add("dnssec_expiry", sec.signature_expiry)
        if sec.registry_disagrees is not None:
            add("dnssec_registry", 1.0 if sec.registry_disagrees else 0.0)
        for ns, bad in sorted(sec.glue_mismatch.items())[:MAX_NAMESERVER_SERIES]:
            add("glue_mismatch", 1.0 if bad else 0.0, nameserver=remote_label(ns))
        if sec.serial_drift is not None:
            add("soa_drift", float(sec.serial_drift))

    if s.email is not None:
        for role, ok in sorted(s.email.by_role().items()):
            if ok is not None:
                add("deliverable", 1.0 if ok else 0.0, role=role)
        self_hosted: dict[str, bool] = {}
        for v in s.email.verdicts:
            self_hosted[v.role] = self_hosted.get(v.role, False) or v.self_hosted
        for role, flag in sorted(self_hosted.items()):
            add("self_hosted", 1.0 if flag else 0.0, role=role)
        personal: dict[str, bool] = {}
        for v in s.email.verdicts:
            personal[v.role] = personal.get(v.role, False) or v.personal
        for role, flag in sorted(personal.items()):
            add("personal", 1.0 if flag else 0.0, role=role)
    return out
