"""Bounded memos for what rendering and saving 100k domains compute again and again.

Two kinds of repetition: equal text values (label values: check names, statuses, registrars)
and shared objects (the config gives every domain with the same labels one mapping, and the
same expected nameservers one tuple: config.py). Both memos are cleared when full, so hostile
or ever-changing values cannot grow them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def memoised(transform: Callable[[str], str], limit: int = 65536) -> Callable[[str], str]:
    """`transform`, remembered per value."""
    done: dict[str, str] = {}

    def get(value: str) -> str:
        out = done.get(value)
        if out is None:
            out = transform(value)
            if len(done) >= limit:
                done.clear()
            done[value] = out
        return out

    return get


def per_object(make: Callable[..., _T], limit: int = 4096) -> Callable[..., _T]:
    """`make(*objects)`, remembered per identity of the objects (never hashed or compared:
    mappings are not hashable, and comparing them would cost what the memo saves). Each entry
    holds its objects: while it exists, no other object can have their ids."""
    done: dict[tuple[int, ...], tuple[tuple[object, ...], _T]] = {}

    def get(*objects: object) -> _T:
        key = tuple(map(id, objects))
        found = done.get(key)
        if found is None:
            if len(done) >= limit:
                done.clear()
            found = done[key] = (objects, make(*objects))
        return found[1]

    return get
