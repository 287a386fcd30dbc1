"""When each (domain, check) is due next: the scheduler's timetable, compact at 100k domains.

One entry per (domain, check), superseded by the next push for the same pair; due times are on
the *monotonic* clock. A heap of `(due, seq, domain, check)` tuples plus a `(domain, check) ->
seq` dict cost ~220 bytes an entry (130 MB at 600,000 entries) and seconds to build. Here

- each watched domain has a *slot*, and each of its checks a *code* (`slot * checks + index`);
- `_due[index][slot]` (one array of doubles per check) holds the live due time, `_UNSET` when
  not scheduled: 8 bytes an entry, and the truth about what is scheduled;
- the heap holds an int per entry due within the *horizon* (the next HORIZON seconds):
  `ticks << bits | code`, `ticks` being the due time in whole milliseconds (rounded up) since
  `origin`. Such ints order like (ticks, code) tuples and cost 32 bytes. Entries due later
  are only in `_due`; a scan of the arrays (C-speed comprehensions, ~30 ms at 100k domains)
  moves the next stretch into the heap every HORIZON / 2 seconds. Checks run hours or a day
  apart, so most entries are far.

A heap entry whose code's live due time no longer maps to its key is stale (superseded or
dropped) and skipped when it surfaces. Whether an entry is due is decided on its exact due time,
never its millisecond: nothing runs before it is due. Entries due within the same millisecond
leave in code order (slots are handed out in config order, so at start-up that is the order in
which the domains and checks are listed), which is the order they were pushed in at start-up.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Container, Iterable, Iterator, Sequence

_UNSET = -math.inf  # no live entry for this code
_TICKS_PER_SECOND = 1000.0
_MIN_BITS = 16
HORIZON = 1800.0  # seconds ahead that the heap covers; it is re-filled every HORIZON / 2


class DueQueue:
    """Due times of (domain, check) pairs; pops the due ones in due order."""

    def __init__(self, kinds: Sequence[str], origin: float, horizon: float = HORIZON) -> None:
        self.kinds = tuple(kinds)
        self._index = {kind: i for i, kind in enumerate(self.kinds)}
        self._width = len(self.kinds)
        self._origin = origin  # monotonic time of tick 0: keeps the keys' ints small
        self._span = horizon
        self._horizon = origin + horizon  # every live entry due before this is in the heap
        self._slots: dict[str, int] = {}
        self._names: list[str | None] = []  # slot -> domain; None: free
        self._free: list[int] = []
        # check index -> slot -> monotonic due time of the live entry, or _UNSET
        self._due = [array("d") for _ in self.kinds]
        self._heap: list[int] = []
        self._bits = _MIN_BITS  # low bits of a key that hold the code

    def __len__(self) -> int:
        """Heap entries (those due within the horizon, stale ones included)."""
        return len(self._heap)

    # --- scheduling ----------------------------------------------------------------------

    def push(self, due: float, domain: str, kind: str) -> None:
        """Make `due` the time of (domain, kind); an earlier entry for it becomes stale."""
        index = self._index[kind]  # KeyError before any change for an unknown check
        slot = self._slot(domain)
        self._due[index][slot] = due
        if due < self._horizon:
            heapq.heappush(self._heap, self._key(due, slot * self._width + index))

    def fill(self, domains: Sequence[str], columns: Iterable[Sequence[float]]) -> int:
        """Schedule every check of these (distinct) domains that has no entry yet. The n-th
        column holds the due times of check `kinds[n]`, one per domain; they are taken one at a
        time (a generator keeps only one alive). Domains new to the queue take the next slots
        in one go, and one heapify replaces a push per entry (start-up: 600,000 entries at 100k
        domains). Returns the entries added."""
        if self._free or any(name in self._slots for name in domains):
            added, keys = self._fill_known(domains, _checked(columns, self._width, len(domains)))
        else:
            keys = self._fill_new(domains, _checked(columns, self._width, len(domains)))
            added = len(domains) * self._width
        self._add_keys(keys)
        return added

    def scheduled(self, domain: str, kind: str) -> bool:
        return self.due(domain, kind) is not None

    def due(self, domain: str, kind: str) -> float | None:
        """Monotonic due time of the pair's live entry (None: not scheduled)."""
        slot = self._slots.get(domain)
        if slot is None:
            return None
        due = self._due[self._index[kind]][slot]
        return None if due == _UNSET else due

    def items(self) -> dict[tuple[str, str], float]:
        """(domain, kind) -> due time of every live entry (O(entries): tests, debugging)."""
        out: dict[tuple[str, str], float] = {}
        for slot, name in enumerate(self._names):
            for kind, table in zip(self.kinds, self._due, strict=True):
                if name is not None and table[slot] != _UNSET:
                    out[(name, kind)] = table[slot]
        return out

    def forget(self, domain: str) -> None:
        """Drop every entry of the domain (its heap entries become stale) and free its slot."""
        slot = self._slots.pop(domain, None)
        if slot is None:
            return
        for table in self._due:
            table[slot] = _UNSET
        self._names[slot] = None
        self._free.append(slot)

    def keep_only(self, domains: Container[str]) -> None:
        """Forget every domain not in `domains`."""
        for name in [n for n in self._slots if n not in domains]:
            self.forget(name)

    # --- leaving -------------------------------------------------------------------------

    def pop_due(self, now: float) -> list[tuple[str, str]]:
        """Remove and return the (domain, kind) pairs due at `now`, in due order."""
        if now >= self._horizon - self._span / 2:
            self._advance(now + self._span)
        heap, tables, mask, width = self._heap, self._due, (1 << self._bits) - 1, self._width
        out: list[tuple[str, str]] = []
        while heap:
            key = heap[0]
            code = key & mask
            slot, index = divmod(code, width)
            due = tables[index][slot]
            if due == _UNSET or self._key(due, code) != key:
                heapq.heappop(heap)  # stale
                continue
            if due > now:
                break
            heapq.heappop(heap)
            tables[index][slot] = _UNSET
            name = self._names[slot]
            assert name is not None  # a free slot has no live entries
            out.append((name, self.kinds[index]))
        return out

    def next_due(self) -> float | None:
        """When pop_due() should be called next: the earliest live entry's due time, or the
        time to extend the horizon if that is sooner (None: nothing is scheduled at all)."""
        refill = self._horizon - self._span / 2 if self._slots else None
        heap, tables, mask, width = self._heap, self._due, (1 << self._bits) - 1, self._width
        while heap:
            code = heap[0] & mask
            slot, index = divmod(code, width)
            due = tables[index][slot]
            if due != _UNSET and self._key(due, code) == heap[0]:
                return due if refill is None else min(due, refill)
            heapq.heappop(heap)  # stale
        return refill

    # --- internals -----------------------------------------------------------------------

    def _key(self, due: float, code: int) -> int:
        return math.ceil((due - self._origin) * _TICKS_PER_SECOND) << self._bits | code

    def _fill_new(self, domains: Sequence[str], columns: Iterable[Sequence[float]]) -> list[int]:
        """Domains without a slot and no free slots: append them, column by column in C."""
        start, count, width = len(self._names), len(domains), self._width
        self._names.extend(domains)
        self._slots.update(zip(domains, range(start, start + count), strict=True))
        self._widen((start + count) * width)
        origin, bits, horizon, ceil = self._origin, self._bits, self._horizon, math.ceil
        keys: list[int] = []
        for index, column in enumerate(columns):
            self._due[index].extend(column)
            codes = range(start * width + index, (start + count) * width, width)
            keys += [
                ceil((due - origin) * _TICKS_PER_SECOND) << bits | code
                for due, code in zip(column, codes, strict=True)
                if due < horizon
            ]
        return keys

    def _fill_known(
        self, domains: Sequence[str], columns: Iterable[Sequence[float]]
    ) -> tuple[int, list[int]]:
        """The general case, entry by entry: keeps the entries that exist."""
        slots = [self._slot(name) for name in domains]  # first: may widen the codes
        added, keys = 0, []
        for index, column in enumerate(columns):
            table = self._due[index]
            for slot, due in zip(slots, column, strict=True):
                if table[slot] == _UNSET:
                    table[slot] = due
                    added += 1
                    if due < self._horizon:
                        keys.append(self._key(due, slot * self._width + index))
        return added, keys

    def _advance(self, horizon: float) -> None:
        """Move the horizon to `horizon`: entries due in [old horizon, new) join the heap."""
        low, width = self._horizon, self._width
        keys: list[int] = []
        for index, table in enumerate(self._due):
            slots = [slot for slot, due in enumerate(table) if low <= due < horizon]
            keys += [self._key(table[slot], slot * width + index) for slot in slots]
        self._horizon = horizon
        self._add_keys(keys)

    def _add_keys(self, keys: list[int]) -> None:
        if len(keys) > len(self._heap):
            self._heap.extend(keys)
            heapq.heapify(self._heap)  # O(n); the order of equal keys is irrelevant
        else:
            for key in keys:
                heapq.heappush(self._heap, key)

    def _slot(self, domain: str) -> int:
        slot = self._slots.get(domain)
        if slot is not None:
            return slot
        if self._free:
            slot = self._free.pop()
            self._names[slot] = domain
        else:
            slot = len(self._names)
            self._names.append(domain)
            for table in self._due:
                table.append(_UNSET)
            self._widen(len(self._names) * self._width)
        self._slots[domain] = slot
        return slot

    def _widen(self, codes: int) -> None:
        """Make room for `codes` codes in the keys' low bits. Re-keying keeps (ticks, code)
        order, so the heap stays a heap; it happens only when the domains double."""
        bits = self._bits
        while (1 << bits) < codes:
            bits += 1
        if bits == self._bits:
            return
        old, mask = self._bits, (1 << self._bits) - 1
        self._heap[:] = [(key >> old) << bits | (key & mask) for key in self._heap]
        self._bits = bits


def _checked(
    columns: Iterable[Sequence[float]], width: int, length: int
) -> Iterator[Sequence[float]]:
    """The columns, each checked before use: one per check, one due time per domain."""
    count = 0
    for column in columns:
        count += 1
        if count > width or len(column) != length:
            raise ValueError("fill() takes one column per check, one due time per domain")
        yield column
    if count != width:
        raise ValueError("fill() takes one column per check, one due time per domain")
