"""Which replica watches which domain: rendezvous (highest random weight) hashing.

Every replica reads the same config; replica `index` of `count` keeps the domains whose highest
weight `blake2b(f"{shard}:{domain}")` is its own. Changing `count` from N to N+1 moves only the
domains the new shard wins (about 1/(N+1) of them) and never moves a domain between two old
shards, so most replicas keep their results and their registries' goodwill. The hash is fixed
(not Python's per-process `hash()`), so every replica and every restart agree.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.config import DomainConfig

# A StatefulSet pod is named <statefulset>-<ordinal>; with setHostnameAsFQDN the hostname also
# carries the service's domain, so only the first label counts.
_ORDINAL = re.compile(r"-([0-9]{1,9})\Z", re.ASCII)


class ShardError(ValueError):
    """A shard setting that cannot work; the message is one line naming the flag."""


def weight(shard: int, domain: str) -> bytes:
    """The shard's weight for this domain; bytes compare like the big-endian number."""
    return hashlib.blake2b(f"{shard}:{domain}".encode(), digest_size=8).digest()


def owner(domain: str, count: int) -> int:
    """The shard (0 .. count-1) that watches `domain` (an A-label) among `count` shards."""
    # max() keeps the first of equal weights: the lowest index wins a (2^-64) tie everywhere.
    return max(range(count), key=lambda shard: weight(shard, domain))


def index_from_hostname(hostname: str) -> int:
    """The StatefulSet pod ordinal: the trailing `-<digits>` of the hostname's first label."""
    first = hostname.split(".", 1)[0]
    match = _ORDINAL.search(first)
    if match is None:
        raise ShardError(
            f"--shard.index-from-hostname: hostname {hostname[:100]!r} does not end in "
            "-<number> (a StatefulSet pod ordinal); pass --shard.index instead"
        )
    return int(match.group(1))


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ShardError(f"--shard.count {self.count}: must be at least 1")
        if not 0 <= self.index < self.count:
            raise ShardError(
                f"--shard.index {self.index}: must be from 0 to {self.count - 1} "
                f"(--shard.count {self.count})"
            )

    def owns(self, domain: str) -> bool:
        return self.count == 1 or owner(domain, self.count) == self.index


def from_flags(
    count: int, index: int | None, from_hostname: bool, hostname: str | None = None
) -> Shard | None:
    """The shard the flags ask for; None when sharding is off (no flag given)."""
    if index is not None and from_hostname:
        raise ShardError("--shard.index and --shard.index-from-hostname exclude each other")
    if from_hostname:
        if hostname is None:
            hostname = socket.gethostname()
        ordinal = index_from_hostname(hostname)
        if ordinal >= count:
            raise ShardError(
                f"--shard.index-from-hostname: hostname {hostname[:100]!r} gives index "
                f"{ordinal}, not below --shard.count {count} (more pods than shards?)"
            )
        return Shard(ordinal, count)
    if index is not None:
        return Shard(index, count)
    if count != 1:
        raise ShardError(
            f"--shard.count {count} needs --shard.index or --shard.index-from-hostname"
        )
    return None


class ShardFilter:
    """Keeps the domains of one shard, remembering each name's verdict so that a reload of a
    100,000-domain config hashes only the names it has not seen (hashing costs ~1 µs per name
    and shard, on the event loop)."""

    def __init__(self, shard: Shard | None) -> None:
        self.shard = shard
        self._owned: dict[str, bool] = {}

    def select(self, domains: Iterable[DomainConfig]) -> list[DomainConfig]:
        if self.shard is None:
            return list(domains)
        shard, known = self.shard, self._owned
        fresh: dict[str, bool] = {}
        out: list[DomainConfig] = []
        for domain in domains:
            mine = known.get(domain.name)
            if mine is None:
                mine = shard.owns(domain.name)
            fresh[domain.name] = mine
            if mine:
                out.append(domain)
        self._owned = fresh  # forget names no longer configured
        return out
