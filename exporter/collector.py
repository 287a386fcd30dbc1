"""Turns a store snapshot into metric families on every scrape. All metric names live here.

No I/O happens in `collect()`: it reads the last known results that the background checks left
in the store. A value never measured is left out, never exported as a made-up 0 or 1.
"""

from __future__ import annotations

import hashlib
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, is_dataclass
from itertools import accumulate
from operator import attrgetter
from typing import Any, cast

from isal import isal_zlib
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.expiry import effective_expiry, registration_sources
from exporter.memo import memoised, per_object
from exporter.store import CHECKS, CheckState, DomainStatus, Records
from exporter.turns import Turns

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
        "Unix time of the last attempt of the check, while it failed (after a success it is "
        "domain_check_last_success_timestamp_seconds and left out).",
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
        "1 per nameserver that a source names; per source that has a set (expected, registry, "
        "parent, child, previous), a label that is 1 if the source lists this nameserver and "
        "0 if it lists others." + _CACHED,
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

# The families with a `check` label are cut by check as well: the text format wants a family's
# samples together but not in any order within it, so they are served check by check. A DNS
# check renews one timestamp of each domain every few minutes; split this way, only the DNS
# part of the family is re-compressed, not the RDAP and e-mail parts beside it.
_BY_CHECK = frozenset({"success", "last_success", "last_attempt", "error"})
ChunkKey = tuple[str, str]  # (family key, check or "")
CHUNK_KEYS: tuple[ChunkKey, ...] = tuple(
    (key, sub)
    for key, _name, _doc in FAMILIES
    if key != _TIME_DEPENDENT
    for sub in (CHECKS if key in _BY_CHECK else ("",))
)
_K = len(CHUNK_KEYS)
_INDEX: dict[str, int] = {key: i for i, (key, sub) in enumerate(CHUNK_KEYS) if not sub}
_INDEX_BY_CHECK: dict[str, dict[str, int]] = {
    key: {sub: i for i, (k, sub) in enumerate(CHUNK_KEYS) if k == key} for key in _BY_CHECK
}

# family key -> (chunk index, metric name): one lookup per rendered line.
_HEADS: dict[str, tuple[int, str]] = {key: (k, _NAMES[key]) for key, k in _INDEX.items()}
_HEADS_BY_CHECK: dict[str, dict[str, tuple[int, str]]] = {
    key: {sub: (k, _NAMES[key]) for sub, k in subs.items()} for key, subs in _INDEX_BY_CHECK.items()
}

# (family key, extra label names, their values, value). The domain's own labels (config labels
# and `domain`) are added by the renderer; the names are shared tuples, so a renderer can cache
# one label template per domain and name tuple.
Sample = tuple[str, tuple[str, ...], tuple[str, ...], float]
_NO: tuple[str, ...] = ()
_CHECK = ("check",)
_CHECK_REASON = ("check", "reason")
_SOURCE = ("source",)
_STATUS = ("status",)
_INFO = ("registrar", "registrar_iana_id", "rdap_server")
# (sources with a set, in _nameserver_info's order) -> the label names of that series
_NS_SOURCE_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_NAMESERVER = ("nameserver",)
_ROLE = ("role",)
_NS_DOMAIN = ("nameserver_domain",)

# Label values from remote data (registrar names, statuses) are cut to this many characters,
# after control characters are removed: a hostile registry must not inflate every scrape.
MAX_REMOTE_LABEL = 200
# Control characters, and lone UTF-16 surrogates (from WHOIS text) that cannot be encoded.
_CONTROL = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000)])


# Nameserver series per domain, all sources together: a hostile delegation may name 1,000
# servers, which must not become 1,000 series (the verdicts still compare the whole sets).
MAX_NAMESERVER_SERIES = 16


_cleaned = memoised(lambda value: value.translate(_CONTROL)[:MAX_REMOTE_LABEL])


def remote_label(value: str | None) -> str:
    """A label value taken from a server we do not control."""
    return _cleaned(value) if value else ""


BLOCK_SIZE = 256  # domains per cached block: small enough that one change re-renders little
# With a background refresh running (keep_fresh), a scrape that finds more store changes than
# this since the last rendering serves that rendering instead of applying them: at 100k
# domains the DNS checks of 5 s are ~3,000 changes, 0.1-0.3 s of CPU under the GIL that the
# scrape would otherwise pay (and wait for while the background thread applies them). What it
# serves is then at most one refresh interval behind the checks, whose results are minutes old
# anyway; fewer changes (every small installation) are applied, so a scrape is exact there.
SCRAPE_APPLIES_AT_MOST = 256
# domain_expiry_days is re-rendered per block at most this often, blocks at staggered times:
# its value lags by at most 300 s (0.0035 days), nothing to an alert on days left.
EXPIRY_RENDER_SECONDS = 300.0


class DomainCollector(Collector):
    """Per-domain gauges. Example exposition for one held domain:

    domain_expiry_days{domain="example.com"} 41.5
    domain_hold{domain="example.com"} 1
    domain_status{domain="example.com",status="client hold"} 1
    domain_check_success{check="rdap",domain="example.com"} 1

    `collect()` serves prometheus_client registries; `exposition_chunks()` renders the same
    text directly from a cache, because at 100,000 domains (3 million samples) building Sample
    objects on every scrape costs a minute of CPU under the GIL, stalling the checks.

    The cache is a grid: blocks of BLOCK_SIZE domains (by position) x chunk keys (a family, or
    a family and a check, CHUNK_KEYS). Each cell is one gzip member, and, with `keep_plain`, its
    text. A scrape re-renders only the domains whose record changed since the last one (never
    the whole block, and for a check run only that check's samples), compares their lines with
    the cached ones, and re-compresses only the cells whose text did change: a DNS check that
    found what it found before changes one cell per block, that of the DNS success timestamps.
    Without `keep_plain` (the default) the text of a cell is decompressed when it is needed:
    for a splice (a few KB) or a plain-text scrape (rare: Prometheus asks for gzip). That keeps
    the cache at about 1/15 of the body: 20 MB instead of 300 MB at 100,000 domains.
    """

    def __init__(
        self,
        store: Records,
        clock: Callable[[], float] = time.time,
        *,
        keep_plain: bool = False,
        restored: Callable[[str], tuple[DomainStatus, bytes] | None] | None = None,
        restored_done: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._keep_plain = keep_plain
        # Until the first rendering: a record's lines saved with it (pack_exposition), if the
        # state file had them for exactly this record; see StatusStore.take_exposition.
        self._restored = restored
        self._restored_done = restored_done
        self._lock = threading.Lock()
        self._blocks: list[_Block] = []
        # The last rendering's cells, made by a refresh that collected them, and the interval
        # of the background refresh once keep_fresh runs (None: every scrape refreshes).
        self._view: _View | None = None
        self._every: float | None = None
        self._headers: dict[str, tuple[bytes, bytes]] = {
            key: _header_pair(name, doc) for key, name, doc in FAMILIES
        }
        self._warm = threading.Event()

    def describe(self) -> list[Metric]:
        # Returning nothing makes registration cheap: prometheus_client would otherwise call
        # collect() at register time to learn the names.
        return []

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        families = {key: Metric(name, doc, "gauge") for key, name, doc in FAMILIES}
        # Within a family, samples come check by check (see _BY_CHECK), as on the fast path.
        rows: dict[str, list[tuple[int, int, dict[str, str], float]]] = {
            key: [] for key in families
        }
        order = {check: i for i, check in enumerate(CHECKS)}
        for status in self._store.snapshot():
            base = {**status.labels, "domain": status.name}
            for key, names, values, value in _domain_samples(status, now):
                labels = {**base, **dict(zip(names, values, strict=True))} if names else base
                sub = order[values[0]] if key in _BY_CHECK else 0
                rows[key].append((sub, len(rows[key]), labels, value))
        for key, metric in families.items():
            for _sub, _n, labels, value in sorted(rows[key], key=lambda r: (r[0], r[1])):
                metric.add_sample(metric.name, labels, value)
        yield from families.values()

    # --- the fast path ----------------------------------------------------------------------

    @property
    def warm(self) -> bool:
        """True once a whole exposition has been rendered (see prerender)."""
        return self._warm.is_set()

    def prerender(self) -> None:
        """Render and compress everything now (after start-up and state restore, on a worker
        thread), so that the first scrape finds a warm cache instead of doing the work."""
        self._refresh()

    def keep_fresh(
        self,
        every: float,
        stop: threading.Event | None = None,
        warmed: Callable[[], None] | None = None,
    ) -> None:
        """prerender(), call `warmed`, then bring the cache up to date every `every` seconds
        until `stop` (run it on a thread of its own). A scrape then serves this rendering when
        more than SCRAPE_APPLIES_AT_MOST changes landed since (at 100k domains, every scrape:
        the DNS checks of 5 s), else it applies the few changes itself (see _parts)."""
        stop = stop or threading.Event()
        self._every = every
        try:
            self.prerender()
            if warmed is not None:
                warmed()
            while not stop.wait(every):
                self._refresh()
        finally:
            self._every = None  # no more background renderings: scrapes refresh themselves

    def exposition(self) -> bytes:
        """The text format (0.0.4) of exactly what collect() yields, byte for byte."""
        return b"".join(self.exposition_chunks())

    def exposition_chunks(self, *, gzipped: bool = False) -> list[bytes]:
        """The exposition as a list of chunks to send in order. With `gzipped`, each chunk is
        a complete gzip member: a gzip stream may be a concatenation of members (RFC 1952
        §2.2), which Prometheus' decoder reads, so a scrape never recompresses what did not
        change. The plain list holds the whole text: for large bodies use exposition_stream."""
        _length, chunks = self.exposition_stream(gzipped=gzipped)
        return list(chunks)

    def exposition_stream(self, *, gzipped: bool = False) -> tuple[int, Iterator[bytes]]:
        """(total length in bytes, the chunks). The plain chunks of cells kept only as gzip
        are decompressed one at a time as the iterator is consumed: a plain scrape of 100,000
        domains never holds its 300 MB at once (if the HTTP server streams the iterator)."""
        parts = self._parts()
        if gzipped:
            members = [gz for _plain, gz, _size in parts]
            return sum(len(m) for m in members), iter(members)
        total = sum(size for _plain, _gz, size in parts)
        return total, _plain_chunks(parts)

    def _parts(self) -> list[tuple[bytes | None, bytes, int]]:
        """The cells a scrape sends: the background refresh's last rendering when it is
        recent and many changes have landed since (SCRAPE_APPLIES_AT_MOST), else a refresh."""
        view, every = self._view, self._every
        if (
            view is not None
            and every is not None
            and self._store.generation - view.generation > SCRAPE_APPLIES_AT_MOST
            # A background refresh that falls behind (a reload that renders everything
            # again) must not leave scrapes serving an old rendering for long.
            and time.monotonic() - view.made < 2 * every
        ):
            return view.parts
        return self._refresh()

    def _refresh(self) -> list[tuple[bytes | None, bytes, int]]:
        """Bring the cache up to date; (plain or None, gzip member, plain size) per cell, kept
        as the view a scrape may serve (see _parts)."""
        generation = self._store.generation  # before the snapshot: the view is never newer
        made = time.monotonic()
        now = self._clock()
        snapshot = self._store.snapshot()
        with self._lock:  # the HTTP server may serve two scrapes at once
            old = self._blocks
            blocks: list[_Block] = []
            # New blocks (all of them at start-up) are compressed on a thread of their own
            # while this one builds the next: deflate lets go of the GIL, so the two overlap.
            pool = ThreadPoolExecutor(1, thread_name_prefix="deflate") if not old else None
            turn = Turns()  # splices deflate and inflate: the event loop's turns (turns.py)
            try:
                for index in range(0, len(snapshot), BLOCK_SIZE):
                    statuses = snapshot[index : index + BLOCK_SIZE]
                    position = index // BLOCK_SIZE
                    block = old[position] if position < len(old) else None
                    if block is None or len(block.statuses) != len(statuses):
                        block = _Block(statuses, now, self._keep_plain, self._restored, pool)
                    else:
                        turn()
                        block.update(statuses, now)
                    blocks.append(block)
                for block in blocks:
                    block.settle()
            finally:
                if pool is not None:
                    pool.shutdown()
            self._blocks = blocks  # drops blocks of domains removed by a reload
            if self._restored is not None:  # used once, by the first rendering
                self._restored = None
                if self._restored_done is not None:
                    self._restored_done()
            phase = EXPIRY_RENDER_SECONDS / max(1, len(blocks))
            out: list[tuple[bytes | None, bytes, int]] = []
            expiry_header = self._headers[_TIME_DEPENDENT]
            out.append((expiry_header[0], expiry_header[1], len(expiry_header[0])))
            for position, block in enumerate(blocks):
                # Blocks renew domain_expiry_days at staggered times: each scrape pays for a
                # share of them, not all of them once a minute.
                cell = block.expiry_cell(now, now + position * phase)
                if cell is not None:
                    out.append(cell)
            out += self._cells(blocks)
            self._view = _View(generation, made, out)
        self._warm.set()
        return out

    def _cells(self, blocks: list[_Block]) -> list[tuple[bytes | None, bytes, int]]:
        """Every family's header and cells after the expiry family's, in exposition order."""
        out: list[tuple[bytes | None, bytes, int]] = []
        family = _TIME_DEPENDENT
        for k, (key, _sub) in enumerate(CHUNK_KEYS):
            if key != family:
                family = key
                header = self._headers[key]
                out.append((header[0], header[1], len(header[0])))
            # (plain or None, gzip member, plain size) of each block's non-empty cell k.
            out += [(b.plain[k], gz, b.sizes[k]) for b in blocks if (gz := b.gz[k]) is not None]
        return out


@dataclass(frozen=True, slots=True)
class _View:
    """A rendering's cells as a scrape sends them, with the store generation it renders (at
    least) and when (time.monotonic()) it was made."""

    generation: int
    made: float
    parts: list[tuple[bytes | None, bytes, int]]


# A plain scrape decompresses its cells in batches of about this much text, two at a time on
# threads of their own (inflate lets go of the GIL), a few batches ahead of the sender: the
# 360 MB of 100k domains take ~0.2 s of one core to inflate.
_INFLATE_BATCH = 2 << 20
_INFLATE_AHEAD = 4


def _plain_chunks(parts: list[tuple[bytes | None, bytes, int]]) -> Iterator[bytes]:
    batches: list[list[tuple[bytes | None, bytes]]] = [[]]
    size = 0
    for plain, gz, plain_size in parts:
        batches[-1].append((plain, gz))
        size += plain_size
        if size >= _INFLATE_BATCH:
            batches.append([])
            size = 0
    with ThreadPoolExecutor(2, thread_name_prefix="inflate") as pool:
        ahead: deque[Future[bytes]] = deque()
        for batch in batches:
            ahead.append(pool.submit(_inflate, batch))
            if len(ahead) > _INFLATE_AHEAD:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _inflate(batch: list[tuple[bytes | None, bytes]]) -> bytes:
    return b"".join(p if p is not None else isal_zlib.decompress(gz, wbits=31) for p, gz in batch)


class _Block:
    """Up to BLOCK_SIZE consecutive domains: per chunk key, the gzip member (and the text, with
    keep_plain) of their samples and the byte length of each domain's lines in it."""

    __slots__ = (
        "_deflated",
        "_deflating",
        "_expiry",
        "_keep_plain",
        "_paid",
        "gz",
        "lengths",
        "plain",
        "sizes",
        "statuses",
    )

    def __init__(
        self,
        statuses: list[DomainStatus],
        now: float,
        keep_plain: bool,
        restored: Callable[[str], tuple[DomainStatus, bytes] | None] | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.statuses = statuses
        # With `pool`, the cells are compressed there, in one job (a job per cell cost ~0.5 s
        # of futures at 100k domains): their keys, and the gzip members after settle().
        self._deflating: list[int] = []
        self._deflated: Future[list[bytes]] | None = None
        self._keep_plain = keep_plain
        self._expiry: tuple[int, bytes | None, bytes, int] | None = None
        # Per domain with an expiry date: "domain_expiry_days{...} " and the date as Unix time.
        self._paid: list[tuple[str, float]] | None = None
        if restored is None:
            texts = [_render(s, now) for s in statuses]
        else:
            texts = [_restored_lines(s, restored(s.name)) or _render(s, now) for s in statuses]
        self.gz: list[bytes | None] = [None] * _K
        self.plain: list[bytes | None] = [None] * _K
        self.lengths: list[array[int] | None] = [None] * _K
        self.sizes = [0] * _K
        pending: list[bytes] | None = [] if pool is not None else None
        for k, column in enumerate(zip(*texts, strict=True)):
            joined = "".join(column)
            if not joined:
                continue
            if joined.isascii():  # O(1) for a str: then characters are bytes
                lengths = array("I", map(len, column))
            else:
                lengths = array("I", (len(t.encode()) for t in column))
            self._set(k, joined.encode(), lengths, pending)
        if pool is not None and pending:
            # Only the job holds the texts, and only until it has run: they must not wait for
            # settle() while the next blocks are rendered (~300 MB at 100k domains).
            self._deflated = pool.submit(_gzip_all, pending)

    def _set(
        self, k: int, data: bytes, lengths: array[int], pending: list[bytes] | None = None
    ) -> None:
        """Cell k's new text, compressed now, or later when `pending` takes it (__init__)."""
        if not data:
            self.gz[k] = self.plain[k] = self.lengths[k] = None
            self.sizes[k] = 0
            return
        self.lengths[k] = lengths
        self.sizes[k] = len(data)
        if pending is None:
            self.gz[k] = _gzip(data)
        else:
            self._deflating.append(k)
            pending.append(data)
        self.plain[k] = data if self._keep_plain else None

    def settle(self) -> None:
        """Wait for the cells compressed on the pool given at creation; a no-op after."""
        if self._deflated is not None:
            for k, gz in zip(self._deflating, self._deflated.result(), strict=True):
                self.gz[k] = gz
        self._deflating = []
        self._deflated = None

    def _text(self, k: int) -> bytes:
        plain = self.plain[k]
        if plain is not None:
            return plain
        gz = self.gz[k]
        return isal_zlib.decompress(gz, wbits=31) if gz is not None else b""

    def update(self, statuses: list[DomainStatus], now: float) -> None:
        old = self.statuses
        if old == statuses:  # identity first, per element, in C; equal records look alike
            self.statuses = statuses
            return
        changed: dict[int, tuple[tuple[int, ...], list[str]]] = {}
        everything = False
        # The records that were replaced, found in one comprehension (most are the same).
        replaced = [i for i, (a, b) in enumerate(zip(old, statuses, strict=True)) if a is not b]
        for i in replaced:
            a, b = old[i], statuses[i]
            kinds = _changed_part(a, b)
            if not kinds:
                continue
            if kinds is _EVERYTHING:
                everything = True
                changed[i] = (_ALL, _render(b, now))
            else:
                changed[i] = (_check_part(kinds), _render(b, now, kinds))
        self.statuses = statuses
        if not changed:
            return
        if everything:
            self._expiry = self._paid = None  # a check's state never changes these
        # Per cell the new lines of the changed domains, compared with their old lines: a DNS
        # check that found the same delegation changes the cell of its timestamps only.
        by_cell: dict[int, dict[int, bytes]] = {}
        for i, (part, texts) in changed.items():
            for k in part:
                by_cell.setdefault(k, {})[i] = texts[k].encode()
        for k, news in by_cell.items():
            lengths = self.lengths[k]
            if lengths is None:
                if any(news.values()):
                    self._splice(k, news, b"", [0] * (len(statuses) + 1))
                continue
            text = self._text(k)
            offsets = list(accumulate(lengths, initial=0))
            if any(text[offsets[i] : offsets[i + 1]] != new for i, new in news.items()):
                self._splice(k, news, text, offsets)

    def _splice(self, k: int, news: dict[int, bytes], text: bytes, offsets: list[int]) -> None:
        """Replace the lines of some domains in cell k (whose text and offsets are given):
        slices of the old text between them, so the Python work follows the changes, not the
        block (plus one decompression and one compression of the cell, in C)."""
        old = self.lengths[k]
        lengths = array("I", bytes(4 * len(self.statuses))) if old is None else array("I", old)
        pieces: list[bytes] = []
        start = 0  # of the old text not yet copied
        for i in sorted(news):
            new = news[i]
            pieces.append(text[start : offsets[i]])
            pieces.append(new)
            start = offsets[i + 1]
            lengths[i] = len(new)
        pieces.append(text[start:])
        self._set(k, b"".join(pieces), lengths)

    def expiry_cell(self, now: float, staggered: float) -> tuple[bytes | None, bytes, int] | None:
        bucket = int(staggered // EXPIRY_RENDER_SECONDS)
        cached = self._expiry
        if cached is None or cached[0] != bucket:
            if self._paid is None:
                name = _NAMES[_TIME_DEPENDENT]
                self._paid = [
                    (f"{name}{_label_text(s)} ", paid)
                    for s in self.statuses
                    if (paid := _paid_until(s)) is not None
                ]
            data = "".join(
                f"{prefix}{_go_float(round((paid - now) / 86400.0, 4))}\n"
                for prefix, paid in self._paid
            ).encode()
            gz = _gzip(data) if data else b""
            cached = self._expiry = (bucket, data if self._keep_plain else None, gz, len(data))
        _bucket, plain, gz, size = cached
        return (plain, gz, size) if gz else None


# What a changed record must re-render: everything, or, when nothing but some checks' states
# changed, the samples of these checks (_check_samples), or nothing.
_EVERYTHING: frozenset[str] = frozenset({"*everything*"})
_ALL = tuple(range(_K))
_CHECK_PARTS: dict[frozenset[str], tuple[int, ...]] = {}


def _check_part(kinds: frozenset[str]) -> tuple[int, ...]:
    part = _CHECK_PARTS.get(kinds)
    if part is None:
        part = tuple(
            k for k, (key, sub) in enumerate(CHUNK_KEYS) if key in _BY_CHECK and sub in kinds
        )
        if len(_CHECK_PARTS) < 256:
            _CHECK_PARTS[kinds] = part
    return part


def _changed_part(a: DomainStatus, b: DomainStatus) -> frozenset[str]:
    """What two records of a domain may render differently, judged without rendering: the
    checks whose samples differ, _EVERYTHING, or nothing. A check run replaces its CheckState
    and its result; the scheduler then replaces the record again for next_due. Neither
    bookkeeping (next_due, failures) nor the time a result was taken (measured_at, read_at)
    is on /metrics, so a DNS check that found what it found before re-renders the DNS check's
    few samples only, and its next_due update nothing. An unknown difference (a new field)
    re-renders everything: never stale."""
    for name in _STATUS_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is not y and not _alike(x, y):
            return _EVERYTHING
    ca, cb = a.checks, b.checks
    if ca is cb:
        return frozenset()
    kinds = set(ca.keys() ^ cb.keys())
    for kind, x in ca.items():
        y = cb.get(kind)
        if y is not None and x is not y and _shown(x) != _shown(y):
            kinds.add(kind)
    return frozenset(kinds)


def _shown(c: CheckState) -> tuple[object, ...]:
    # Every CheckState field _check_samples reads: keep in step with it.
    return (c.success, c.last_attempt, c.last_success, c.error)


# Fields of result records that no family renders: when of the same type, two results that
# differ only in these are alike. (Rendering one of them later means removing it here; the
# test test_unshown_fields_are_not_rendered fails until then.)
UNSHOWN_FIELDS = frozenset({"measured_at", "read_at"})
_STATUS_FIELDS = tuple(f.name for f in fields(DomainStatus) if f.name != "checks")
_SHOWN_GETTERS: dict[type, Callable[[Any], Any]] = {}


def _alike(x: object, y: object) -> bool:
    if x == y:
        return True
    if type(x) is not type(y) or not is_dataclass(x):
        return False
    getter = _SHOWN_GETTERS.get(type(x))
    if getter is None:
        names = [f.name for f in fields(x) if f.name not in UNSHOWN_FIELDS]
        getter = _SHOWN_GETTERS[type(x)] = attrgetter(*names) if names else lambda _v: ()
    return bool(getter(x) == getter(y))


def _gzip_all(cells: list[bytes]) -> list[bytes]:
    return [_gzip(data) for data in cells]


def _gzip(data: bytes) -> bytes:
    # ISA-L's deflate (python-isal), level 1: the text format compresses ~20x even so, at
    # 2-2.5x the speed of zlib's level 1 and the same ratio, and it inflates 2-3.5x faster
    # (bench/codec.py), which every refresh, first rendering and plain scrape pays. The members
    # are plain gzip. It lets go of the GIL while it works.
    return isal_zlib.compress(data, 1, wbits=31)


def _header_pair(name: str, doc: str) -> tuple[bytes, bytes]:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    text = f"# HELP {name} {doc}\n# TYPE {name} gauge\n".encode()
    return text, _gzip(text)


# Label values in the text format, escaped once per value.
_escape = memoised(
    lambda value: value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
)


_VALUES = {1.0: "1.0", 0.0: "0.0"}


def _go_float(value: float) -> str:
    """floatToGoString's text, without its general checks for the common values: flags, and
    Unix times (which Go writes with an exponent: 1.7958e+09)."""
    text = _VALUES.get(value)
    if text is not None:
        return text
    if 1e9 <= value < 1e10:  # a Unix time: repr is "1795800000.0675552", never an exponent
        r = repr(value)
        return f"{r[0]}.{r[1:10]}{r[11:]}".rstrip("0.") + "e+09"
    general: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return general


def _label_text(s: DomainStatus) -> str:
    """{k="v",...} of the domain's own labels alone."""
    return _labels_around_name(s.labels) % _escape(s.name)


@per_object
def _labels_around_name(labels: Mapping[str, str]) -> str:
    """_label_text's %-template of a (shared) label mapping: the text around the name."""
    pairs = sorted({**labels, "domain": ""}.items())
    return (
        "{"
        + ",".join(
            f'{k}="{_escape(v).replace("%", "%%")}"' if k != "domain" else 'domain="%s"'
            for k, v in pairs
        )
        + "}"
    )


# (the domain's own label names, extra label names) -> (a str.format recipe that takes the
# domain's own rendered labels and leaves a %s per extra label, in sorted label order; the
# order in which the extra values fill those %s). A handful of entries: config label sets are
# few, and so are the families' label names.
_RECIPES: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, tuple[int, ...]]] = {}


def _recipe(own: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    found = _RECIPES.get((own, extra))
    if found is None:
        slots = sorted(
            [(k, False, i) for i, k in enumerate(own)] + [(k, True, j) for j, k in enumerate(extra)]
        )
        text = ",".join(f'{k}="%s"' if is_extra else f"{{{i}}}" for k, is_extra, i in slots)
        found = ("{{" + text + "}} ", tuple(i for _k, is_extra, i in slots if is_extra))
        if len(_RECIPES) < 4096:  # bounded, whatever the config holds
            _RECIPES[(own, extra)] = found
    return found


def _render(s: DomainStatus, now: float, kinds: frozenset[str] = _EVERYTHING) -> list[str]:
    """The exposition lines of one domain per chunk key (CHUNK_KEYS order), without
    domain_expiry_days: exactly the samples _domain_samples lists, in its order. With `kinds`,
    only those of _check_samples for these checks (the other keys are left empty)."""
    own = sorted({**s.labels, "domain": s.name}.items())
    own_names = tuple(k for k, _v in own)
    # Each own label rendered once per domain; % doubled for the %-templates made of them.
    pieces = [f'{k}="{_escape(v)}"'.replace("%", "%%") for k, v in own]
    # names -> (template, the order in which the values fill its %s)
    templates: dict[tuple[str, ...], tuple[str, tuple[int, ...]]] = {}
    out: dict[int, list[str]] = {}
    if kinds is _EVERYTHING:
        samples = _domain_samples(s, now, with_expiry_days=False)
    else:
        samples = _check_samples(s, [kind for kind in CHECKS if kind in kinds])
    bare = None  # the labels of a family without labels of its own: the domain's alone
    for key, names, values, value in samples:
        if not names:
            if bare is None:
                bare = _recipe(own_names, names)[0].format(*pieces) % ()
            labels = bare
        else:
            cached = templates.get(names)
            if cached is None:
                recipe, order = _recipe(own_names, names)
                cached = templates[names] = (recipe.format(*pieces), order)
            template, order = cached
            if len(values) == 1:
                labels = template % _escape(values[0])
            else:
                labels = template % tuple([_escape(values[i]) for i in order])
        head = _HEADS.get(key)
        if head is None:
            head = _HEADS_BY_CHECK[key][values[0]]
        k, name = head
        line = f"{name}{labels}{_go_float(value)}\n"
        lines = out.get(k)
        if lines is None:
            out[k] = [line]
        else:
            lines.append(line)
    texts = [""] * _K
    for k, lines in out.items():
        texts[k] = "".join(lines)
    return texts


# What the lines of a record look like: saved with packed expositions, so that lines saved by
# another version of the exporter are rendered anew, never served. Bump on any change to how a
# line is written that FAMILIES and CHUNK_KEYS do not show.
_LINE_FORMAT = 1
EXPOSITION_FORMAT = hashlib.blake2b(
    repr((_LINE_FORMAT, FAMILIES, CHUNK_KEYS)).encode(), digest_size=8
).hexdigest()


def pack_exposition(s: DomainStatus) -> bytes | None:
    """The record's lines per chunk key (without domain_expiry_days, the one family that
    depends on the time), NUL-separated and deflated: ~700 bytes at 36 lines. Saved with the
    record, it lets a restart skip rendering (100k domains: ~10 s of CPU before /-/ready).
    None when a line holds a NUL (it would split wrongly): such a record is rendered anew."""
    texts = _render(s, 0.0)
    if any("\x00" in t for t in texts):
        return None
    return isal_zlib.compress("\x00".join(texts).encode(), 1)


def _restored_lines(s: DomainStatus, saved: tuple[DomainStatus, bytes] | None) -> list[str] | None:
    """The lines saved with the record restored for `s`'s domain, if `s` renders as that
    record does (the scheduler may have replaced it since, e.g. for a next run time)."""
    if saved is None:
        return None
    record, blob = saved
    if record is not s and _changed_part(record, s):
        return None
    return _unpack_exposition(blob)


# What isal_zlib.decompress raises for damaged data (its stub types `error` as an instance).
_BAD_DEFLATE = cast(type[Exception], isal_zlib.error)


def _unpack_exposition(blob: bytes) -> list[str] | None:
    """pack_exposition's lines, or None when they are not readable."""
    try:
        texts = isal_zlib.decompress(blob).decode().split("\x00")
    except (_BAD_DEFLATE, UnicodeDecodeError):
        return None
    return texts if len(texts) == _K else None


def _paid_until(s: DomainStatus) -> float | None:
    paid_until, _source = effective_expiry(s)
    return None if paid_until is None else paid_until.timestamp()


def _expiry_days(s: DomainStatus, now: float) -> float | None:
    paid = _paid_until(s)
    return None if paid is None else round((paid - now) / 86400.0, 4)


def _check_samples(s: DomainStatus, kinds: Iterable[str] = CHECKS) -> list[Sample]:
    """The samples of the families with a `check` label, of these checks: they read only
    `s.checks`, and only the fields _shown lists (see _changed_part)."""
    out: list[Sample] = []
    add = out.append
    for kind in kinds:
        c = s.checks.get(kind)
        if c is None or c.success is None:
            continue
        check = (kind,)
        add(("success", _CHECK, check, 1.0 if c.success else 0.0))
        # A successful attempt is also the last success: its time is exported once, there.
        if c.last_attempt is not None and not c.success:
            add(("last_attempt", _CHECK, check, c.last_attempt))
        if c.last_success is not None:
            add(("last_success", _CHECK, check, c.last_success))
        if not c.success and c.error:
            add(("error", _CHECK_REASON, (kind, c.error), 1.0))
    return out


def _nameserver_info(s: DomainStatus) -> list[Sample]:
    """One domain_nameserver_info series per nameserver that any source names, with a label
    per source that has a set: "1" if the source lists the server, "0" if it lists others.
    A source without a set (not configured, not measured, no change seen) has no label:
    unknown is not "not listed"."""
    sets: list[tuple[str, tuple[str, ...]]] = []
    if s.expected_nameservers:
        sets.append(("expected", s.expected_nameservers))
    reg = s.rdap.registration if s.rdap is not None else None
    if reg is not None and reg.nameservers:
        sets.append(("registry", reg.nameservers))
    if s.dns is not None:
        if s.dns.parent:
            sets.append(("parent", s.dns.parent))
        if s.dns.child:
            sets.append(("child", s.dns.child))
    # The set before a nameserver change, for a day (changes.PREVIOUS_KEEP_SECONDS).
    if s.changes.previous_nameservers:
        sets.append(("previous", s.changes.previous_nameservers))
    if not sets:
        return []
    names = _NS_SOURCE_NAMES.get(tuple(source for source, _ in sets))
    if names is None:
        names = ("nameserver", *sorted(source for source, _ in sets))
        if len(_NS_SOURCE_NAMES) < 64:  # at most 2^5 source combinations
            _NS_SOURCE_NAMES[tuple(source for source, _ in sets)] = names
    members = {source: frozenset(map(remote_label, servers)) for source, servers in sets}
    # Capped (a hostile delegation may name 1,000 servers): the configured and registry
    # servers are kept first, so the servers that matter most are never pushed out.
    listed: dict[str, None] = {}
    for source, _servers in sets:
        for ns in sorted(members[source]):
            if len(listed) >= MAX_NAMESERVER_SERIES:
                break
            listed.setdefault(ns)
    sources = names[1:]
    return [
        (
            "ns_info",
            names,
            (ns, *("1" if ns in members[source] else "0" for source in sources)),
            1.0,
        )
        for ns in sorted(listed)
    ]


def _domain_samples(s: DomainStatus, now: float, *, with_expiry_days: bool = True) -> list[Sample]:
    """Every sample of one domain, in family order within this domain."""
    out: list[Sample] = []
    if with_expiry_days:
        days = _expiry_days(s, now)
        if days is not None:
            out.append(("expiry_days", _NO, _NO, days))
    out += _check_samples(s)
    add = out.append

    expiry, _source = effective_expiry(s)
    if expiry is not None:
        add(("expiry_ts", _NO, _NO, expiry.timestamp()))
    if s.rdap is not None and s.rdap.registered is not None:
        add(("registered", _NO, _NO, 1.0 if s.rdap.registered else 0.0))
    for source in registration_sources(s):
        add(("source", _SOURCE, (source,), 1.0))
    if s.rdap is not None:
        reg = s.rdap.registration
        if reg is not None:
            if reg.expiry is not None:
                add(("registry_expiry_ts", _NO, _NO, reg.expiry.timestamp()))
            if reg.registrar_expiry is not None:
                add(("registrar_expiry_ts", _NO, _NO, reg.registrar_expiry.timestamp()))
            # Statuses are only known when the registry listed some; an absent list is not
            # "no hold", so the hold flag is left out too.
            if reg.statuses:
                add(("hold", _NO, _NO, 1.0 if reg.on_hold else 0.0))
                for st in sorted({remote_label(st) for st in reg.statuses}):
                    add(("status", _STATUS, (st,), 1.0))
                add(("transfer_lock", _NO, _NO, 1.0 if reg.transfer_locked else 0.0))
            if reg.last_changed is not None:
                add(("last_changed", _NO, _NO, reg.last_changed.timestamp()))
            add(
                (
                    "info",
                    _INFO,
                    (
                        remote_label(reg.registrar),
                        remote_label(reg.registrar_iana_id),
                        remote_label(s.rdap.server),
                    ),
                    1.0,
                )
            )

    if s.changes.nameservers_changed_at is not None:
        add(("ns_changed", _NO, _NO, s.changes.nameservers_changed_at))
    if s.changes.registrar_changed_at is not None:
        add(("registrar_changed", _NO, _NO, s.changes.registrar_changed_at))
    out += _nameserver_info(s)
    if s.nsdomain is not None:
        for nsd in s.nsdomain.verdicts:
            if nsd.healthy is not None:
                value = 1.0 if nsd.healthy else 0.0
                add(("ns_domain_healthy", _NS_DOMAIN, (nsd.nameserver_domain,), value))
    if s.dns is not None:
        d = s.dns
        if d.delegated is not None:
            add(("delegated", _NO, _NO, 1.0 if d.delegated else 0.0))
        if d.mismatch is not None:
            add(("mismatch", _NO, _NO, 1.0 if d.mismatch else 0.0))
        if d.inconsistent is not None:
            add(("inconsistent", _NO, _NO, 1.0 if d.inconsistent else 0.0))
        for ns, reason in sorted(d.lame.items())[:MAX_NAMESERVER_SERIES]:
            add(("lame", _NAMESERVER, (remote_label(ns),), 0.0 if reason is None else 1.0))

    if s.dnssec is not None:
        sec = s.dnssec
        if sec.signed is not None:
            add(("dnssec_signed", _NO, _NO, 1.0 if sec.signed else 0.0))
        if sec.ds_mismatch is not None:
            add(("dnssec_ds_mismatch", _NO, _NO, 1.0 if sec.ds_mismatch else 0.0))
        if sec.signature_expiry is not None:
            add(("dnssec_expiry", _NO, _NO, sec.signature_expiry))
        if sec.registry_disagrees is not None:
            add(("dnssec_registry", _NO, _NO, 1.0 if sec.registry_disagrees else 0.0))
        for ns, bad in sorted(sec.glue_mismatch.items())[:MAX_NAMESERVER_SERIES]:
            add(("glue_mismatch", _NAMESERVER, (remote_label(ns),), 1.0 if bad else 0.0))
        if sec.serial_drift is not None:
            add(("soa_drift", _NO, _NO, float(sec.serial_drift)))

    if s.email is not None:
        for role, ok in sorted(s.email.by_role().items()):
            if ok is not None:
                add(("deliverable", _ROLE, (role,), 1.0 if ok else 0.0))
        self_hosted: dict[str, bool] = {}
        for v in s.email.verdicts:
            self_hosted[v.role] = self_hosted.get(v.role, False) or v.self_hosted
        for role, flag in sorted(self_hosted.items()):
            add(("self_hosted", _ROLE, (role,), 1.0 if flag else 0.0))
        personal: dict[str, bool] = {}
        for v in s.email.verdicts:
            personal[v.role] = personal.get(v.role, False) or v.personal
        for role, flag in sorted(personal.items()):
            add(("personal", _ROLE, (role,), 1.0 if flag else 0.0))
    return out
