"""What delegation checks may remember between each other: zone cuts, nameserver addresses and
which servers answered lately (issue 9, "DNS politeness at scale").

One `ZoneCache` is shared by every delegation check of a process (`DelegationCheck` owns it), so
that 10,000 domains under one TLD cost the root one question per TTL instead of 10,000, and the
TLD servers' addresses are not looked up again for every domain. It lives on the asyncio loop:
no locks, every method is synchronous and cheap.

What may enter (nameservers.py decides, this module only keeps):
- a zone cut and its NS names (with the glue that came along) from a referral given by a server
  of the zone that was asked, going down towards the name asked about;
- the addresses of a name from an authoritative (AA) answer or NODATA/NXDOMAIN, or from glue.
Never a non-authoritative answer (an intercepting network), never a failure, and never the
question a check exists to measure: the domain's own NS set at its parent is always asked.

Each entry lives for its TTL, clamped to [min_ttl, max_ttl] (floor: a zone with TTL 0 would
otherwise be asked for every domain; cap: a record with a week-long TTL must not pin a renumbered
TLD server for a week). max_ttl is never more than `TTL_CAP`. Entries are bounded in number (LRU):
at most `max_entries` cuts and as many address sets.

Also kept for a minute: whether this host has a route to an address at all (`route`).

Spreading the load: `turn(zone, n)` rotates which of a zone's servers is asked first, and a
server that timed out is asked last for `backoff` seconds (`timed_out` / `answered`).

Everything is keyed by the root servers in use (`bind`): a configuration that points the
exporter at other roots starts from an empty cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import dns.name
import dns.rdatatype

Server = tuple[str, int]  # (address, port)

# The longest any entry may be kept, whatever the zone says (one day, like unbound's
# cache-max-ttl default).
TTL_CAP = 86400.0
DEFAULT_MIN_TTL = 60.0
DEFAULT_MAX_ENTRIES = 10_000
# How long a server that timed out is asked last (after its zone's other servers).
DEFAULT_BACKOFF = 30.0
# How long "this host has (no) route to that address" is believed: a local fact that changes
# when the host's network does (an IPv6 uplink going away), so not for long.
ROUTE_TTL = 60.0

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
# A name as a key: its lower-cased labels. dnspython's Name hashes (and compares) label by label
# in Python on every dict access; a tuple of bytes does both in C.
NameKey = tuple[bytes, ...]


def name_key(name: dns.name.Name) -> NameKey:
    return tuple(map(bytes.lower, name.labels))


@dataclass(frozen=True)
class CachedServer:
    """One nameserver of a cached zone cut: its name (None for configured addresses) and the
    glue that came with the referral (None: resolve the name when it is needed)."""

    name: dns.name.Name | None
    addresses: tuple[Server, ...] | None


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    expires: float
    rank: int = 0


class _Lru(Generic[K, V]):
    """A bounded mapping that forgets its least recently used key first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# Trust ranks of address data (RFC 2181 §5.4.1, simplified): an authoritative answer from the
# name's own zone beats glue from a parent, which may be stale.
RANK_GLUE = 0
RANK_ANSWER = 1


class ZoneCache:
    """Zone cuts, nameserver addresses and server health shared by delegation checks."""

    def __init__(
        self,
        *,
        min_ttl: float = DEFAULT_MIN_TTL,
        max_ttl: float = TTL_CAP,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        backoff: float = DEFAULT_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError(f"min_ttl {min_ttl} must be between 0 and max_ttl {max_ttl}")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.min_ttl = min_ttl
        self.max_ttl = min(max_ttl, TTL_CAP)
        self.backoff = backoff
        self._clock = clock
        self._roots: tuple[Server, ...] | None = None
        self._cuts: _Lru[NameKey, _Entry[tuple[CachedServer, ...]]] = _Lru(max_entries)
        self._addresses: _Lru[tuple[NameKey, int], _Entry[tuple[Server, ...]]] = _Lru(max_entries)
        self._silent_until: _Lru[Server, float] = _Lru(max_entries)
        self._turns: _Lru[NameKey, int] = _Lru(max_entries)
        self._routes: _Lru[str, tuple[bool, float]] = _Lru(max_entries)
        # Questions on the way down being asked right now, so that 1,000 checks starting together
        # ask the root once, not 1,000 times (see `flight`).
        self._flights: dict[Hashable, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    # -- scope ---------------------------------------------------------------------------------

    def bind(self, roots: tuple[Server, ...]) -> None:
        """Use the cache for a walk from `roots`; other roots than last time empty it."""
        if roots != self._roots:
            self.clear()
            self._roots = roots

    def clear(self) -> None:
        self._cuts.clear()
        self._addresses.clear()
        self._silent_until.clear()
        self._turns.clear()
        self._routes.clear()

    @property
    def size(self) -> tuple[int, int]:
        """(cached zone cuts, cached address sets), expired ones included until next use."""
        return len(self._cuts), len(self._addresses)

    def ttl(self, seconds: float) -> float:
        """`seconds` clamped to [min_ttl, max_ttl]."""
        return min(max(seconds, self.min_ttl), self.max_ttl)

    # -- zone cuts -----------------------------------------------------------------------------

    def cut(self, zone: dns.name.Name) -> tuple[CachedServer, ...] | None:
        """The servers of `zone` when its cut is cached and fresh."""
        key = name_key(zone)
        entry = self._cuts.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._cuts.pop(key)
            return None
        return entry.value

    def put_cut(self, zone: dns.name.Name, servers: tuple[CachedServer, ...], ttl: float) -> None:
        if servers:
            self._cuts.put(name_key(zone), _Entry(servers, self._clock() + self.ttl(ttl)))

    def drop_cut(self, zone: dns.name.Name) -> None:
        self._cuts.pop(name_key(zone))

    # -- addresses -----------------------------------------------------------------------------

    def addresses(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> tuple[Server, ...] | None:
        """Known addresses of one type for `name`; () = it has none (an authoritative
        negative answer); None = not known."""
        key = (name_key(name), int(rdtype))
        entry = self._addresses.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._addresses.pop(key)
            return None
        return entry.value

    def put_addresses(
        self,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        addresses: tuple[Server, ...],
        ttl: float,
        *,
        rank: int,
    ) -> None:
        key = (name_key(name), int(rdtype))
        now = self._clock()
        old = self._addresses.get(key)
        if old is not None and old.rank > rank and old.expires > now:
            return  # glue never overrides what the name's own zone said
        self._addresses.put(key, _Entry(addresses, now + self.ttl(ttl), rank))

    # -- spreading the load --------------------------------------------------------------------

    def turn(self, zone: dns.name.Name, count: int) -> int:
        """Where to start in the (sorted) server list of `zone` this time: each question to the
        zone starts one server further, so all of them share the load."""
        if count <= 1:
            return 0
        key = name_key(zone)
        current = self._turns.get(key) or 0
        self._turns.put(key, current + 1)
        return current % count

    def answered(self, server: Server) -> None:
        self._silent_until.pop(server)

    def timed_out(self, server: Server) -> None:
        self._silent_until.put(server, self._clock() + self.backoff)

    @property
    def backoffs(self) -> int:
        """How many servers may be backing off (a cheap "none" before asking per server)."""
        return len(self._silent_until)

    def backing_off(self, server: Server) -> bool:
        """Did `server` time out within the last `backoff` seconds?"""
        until = self._silent_until.get(server)
        if until is None:
            return False
        if until <= self._clock():
            self._silent_until.pop(server)
            return False
        return True

    def route(self, host: str) -> bool | None:
        """Whether this host could send to `host` lately (None: not known)."""
        known = self._routes.get(host)
        if known is None:
            return None
        if known[1] <= self._clock():
            self._routes.pop(host)
            return None
        return known[0]

    def put_route(self, host: str, routable: bool) -> None:
        self._routes.put(host, (routable, self._clock() + ROUTE_TTL))

    # -- one question at a time ----------------------------------------------------------------

    def flight(self, key: Hashable) -> asyncio.Event | None:
        """The event of a question with this key already being asked on this loop, or None."""
        held = self._flights.get(key)
        if held is None:
            return None
        loop, event = held
        if loop is not asyncio.get_running_loop():
            return None  # left by another event loop (tests run one per asyncio.run)
        return event

    def take_off(self, key: Hashable) -> asyncio.Event:
        """Announce that this check asks the question `key`; `land` it when done (always)."""
        event = asyncio.Event()
        self._flights[key] = (asyncio.get_running_loop(), event)
        return event

    def land(self, key: Hashable, event: asyncio.Event) -> None:
        if self._flights.get(key, (None, None))[1] is event:
            del self._flights[key]
        event.set()
