"""The flags that page, as pure functions of what the checks measured (README "Truth tables").

Each function here is one row-set of a truth table: it takes measured facts (None = not measured)
and returns 1/0 as True/False, or None for "absent". No I/O, no clocks: callers pass the times.
The scheduler applies them when a check lands; the tests walk every row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exporter.names import normalise_host


@dataclass(frozen=True)
class NameserverVerdict:
    """`mismatch` for domain_nameserver_mismatch; `disagree_since` is when the parent and the
    registry were first seen to differ (None while they agree), carried from check to check so
    that a persistent disagreement stays confirmed instead of flapping."""

    mismatch: bool | None
    disagree_since: float | None = None
    needs_registry_reread: bool = False


def name_set(names: Iterable[str]) -> frozenset[str]:
    """Names compared after normalisation: case, order and a trailing dot never matter."""
    return frozenset(normalise_host(n) or n.rstrip(".").lower() for n in names)


def nameserver_verdict(
    *,
    parent: Iterable[str] | None,
    delegated: bool | None,
    expected: Iterable[str],
    registry: Iterable[str] | None,
    registry_read_at: float | None,
    previous: bool | None,
    disagree_since: float | None,
    now: float,
) -> NameserverVerdict:
    """domain_nameserver_mismatch.

    | parent measured & delegated | expected set | registry set           | verdict           |
    | no                          | any          | any                    | absent            |
    | yes                         | configured   | any                    | parent != expected|
    | yes                         | none         | unknown or empty       | absent            |
    | yes                         | none         | == parent              | 0                 |
    | yes                         | none         | != parent, read after  | 1                 |
    |                             |              | the difference appeared|                   |
    | yes                         | none         | != parent, read before | previous value;   |
    |                             |              |                        | RDAP re-read asked|

    The registry comparison never depends on how old the RDAP data is, only on whether a read
    finished after the disagreement was first seen, so a persistent disagreement never flaps.
    """
    if parent is None or delegated is not True:
        return NameserverVerdict(None)
    p = name_set(parent)
    if not p:
        return NameserverVerdict(None)
    e = name_set(expected)
    if e:
        return NameserverVerdict(e != p)
    r = name_set(registry) if registry is not None else frozenset()
    if not r:
        return NameserverVerdict(None)
    if r == p:
        return NameserverVerdict(False)
    since = disagree_since if disagree_since is not None else now
    if registry_read_at is not None and registry_read_at >= since:
        return NameserverVerdict(True, since)
    return NameserverVerdict(previous, since, needs_registry_reread=True)


def nameserver_inconsistent(
    parent: Iterable[str] | None, child: Iterable[str] | None
) -> bool | None:
    """domain_nameserver_inconsistent: the parent's delegation vs the child's apex NS set.
    Absent when either side was not measured (or the parent delegates nothing)."""
    if parent is None or child is None:
        return None
    p = name_set(parent)
    if not p:
        return None
    return p != name_set(child)


def registration_confirmed_gone(
    *,
    first_404: float,
    now: float,
    hold_interval: float,
    parent_nxdomain: bool,
) -> bool:
    """domain_registered 0 needs a second 404 at least `hold_interval` after the first, or a 404
    together with an authoritative NXDOMAIN (or NODATA) at the parent."""
    return parent_nxdomain or now - first_404 >= hold_interval
