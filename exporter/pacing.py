"""Politeness towards one remote host: spacing, an in-flight cap, pauses and back-off.

Registries rate-limit per client IP and some ban abusers for hours, so every request to a host
goes through its `HostPacer`. A 429 pauses only that host; other hosts carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# Back-off after repeated host-level failures (timeouts, refused connections, 5xx): the first two
# failures are forgiven (a single slow answer is common), then 5 s, 10 s, ... up to 10 min.
_FORGIVEN_FAILURES = 2
_BACKOFF_BASE = 5.0
_BACKOFF_MAX = 600.0
# 429 without Retry-After: start at 60 s and double up to an hour (rdap-dns-email.md A8).
_RATE_LIMIT_BASE = 60.0
_RATE_LIMIT_MAX = 3600.0
# A Retry-After beyond a day is almost certainly a server bug; do not go silent for longer.
_RETRY_AFTER_MAX = 86400.0
# Failure counters have no bound (a registry down for weeks, a domain broken for months); the
# exponent of a back-off has one, far past every cap: 60.0 * 2**1024 is not a float.
_MAX_DOUBLINGS = 40


def doubled(base: float, times: int) -> float:
    """`base` doubled `times` times (none for a negative count), never overflowing."""
    return base * 2.0 ** min(max(0, times), _MAX_DOUBLINGS)


class HostPaused(Exception):
    """The host is paused (429 or failure back-off) for longer than the caller will wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"host paused for {seconds:.0f}s")
        self.seconds = seconds


class HostPacer:
    def __init__(
        self,
        requests_per_second: float,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spacing = 1.0 / requests_per_second
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._in_flight = 0
        self._next_start = 0.0
        self._paused_until = 0.0
        self._failures = 0
        self._rate_limits = 0
        self._changed = asyncio.Event()

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def configure(self, requests_per_second: float, max_in_flight: int) -> None:
        self.spacing = 1.0 / requests_per_second
        self.max_in_flight = max_in_flight

    async def acquire(self, max_pause: float | None = None) -> None:
        """Wait until a request may start: spacing elapsed, not paused, below the in-flight cap.

        With `max_pause`, give up (HostPaused) as soon as the host is paused for longer than
        that, instead of waiting the pause out: a caller that is only one of several hosts in a
        lookup (a registrar referral) must not sit on its caller's slots for up to an hour.
        """
        while True:
            now = self._clock()
            if max_pause is not None and self._paused_until - now > max_pause:
                raise HostPaused(self._paused_until - now)
            wait: float | None = None
            if self._in_flight < self.max_in_flight:
                wait = max(self._next_start, self._paused_until) - now
                if wait <= 0:
                    self._in_flight += 1
                    self._next_start = now + self.spacing
                    return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    def release(self) -> None:
        self._in_flight -= 1
        self._changed.set()

    @asynccontextmanager
    async def slot(self, max_pause: float | None = None) -> AsyncIterator[None]:
        # Cancellation (an overall deadline) while waiting acquires nothing; once acquired, the
        # finally releases the slot whatever ends the request.
        await self.acquire(max_pause)
        try:
            yield
        finally:
            self.release()

    def pause(self, seconds: float) -> float:
        """Pause this host for `seconds` (capped); returns the pause actually applied."""
        # NaN or a negative value (never produced by our parsers, but cheap to rule out) is no
        # pause rather than a poisoned deadline.
        seconds = min(seconds, _RETRY_AFTER_MAX) if seconds > 0 else 0.0
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._changed.set()  # waiters with a max_pause re-check at once
        return seconds

    def rate_limited(self, retry_after: float | None) -> float:
        """Record a 429; returns how long the host is paused."""
        self._rate_limits += 1
        if retry_after is None:
            retry_after = min(doubled(_RATE_LIMIT_BASE, self._rate_limits - 1), _RATE_LIMIT_MAX)
        return self.pause(retry_after)

    def failed(self) -> None:
        self._failures += 1
        if self._failures > _FORGIVEN_FAILURES:
            n = self._failures - _FORGIVEN_FAILURES - 1
            self.pause(min(doubled(_BACKOFF_BASE, n), _BACKOFF_MAX))

    def succeeded(self) -> None:
        self._failures = 0
        self._rate_limits = 0
