"""HostPacer: request spacing, the in-flight cap, 429 pauses and failure back-off.

Timing tests run on the real monotonic clock with short intervals; the arithmetic of pauses and
back-off runs on a fake clock so that it is exact.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from exporter.pacing import HostPacer

# asyncio's timers may fire up to one clock tick early; the pacer re-checks, but our own
# measurement happens a little after its decision. Allow this much.
SLACK = 0.003


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_spacing_sequential() -> None:
    async def run() -> list[float]:
        pacer = HostPacer(requests_per_second=20, max_in_flight=10)
        starts = [time.monotonic()]
        for _ in range(5):
            async with pacer.slot():
                starts.append(time.monotonic())
        return starts

    t0, *starts = asyncio.run(run())
    assert starts[0] - t0 < 0.04  # the first request does not wait
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.05 - SLACK for gap in gaps), gaps
    assert starts[-1] - starts[0] < 4 * 0.05 + 0.3  # and it does not dawdle either


def test_spacing_concurrent_waiters() -> None:
    async def run() -> list[float]:
        pacer = HostPacer(requests_per_second=20, max_in_flight=10)
        starts: list[float] = []

        async def one() -> None:
            async with pacer.slot():
                starts.append(time.monotonic())
                await asyncio.sleep(0.001)

        await asyncio.gather(*(one() for _ in range(5)))
        return sorted(starts)

    starts = asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 5
    assert all(gap >= 0.05 - SLACK for gap in gaps), gaps


def test_in_flight_cap() -> None:
    async def run() -> tuple[int, float]:
        pacer = HostPacer(requests_per_second=1000, max_in_flight=2)
        current = peak = 0

        async def one() -> None:
            nonlocal current, peak
            async with pacer.slot():
                current += 1
                peak = max(peak, current)
                await asyncio.sleep(0.03)
                current -= 1

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(6)))
        return peak, time.monotonic() - t0

    peak, elapsed = asyncio.run(run())
    assert peak == 2
    assert elapsed >= 3 * 0.03 - SLACK  # six requests, two at a time: three waves


def test_release_wakes_a_waiter_promptly() -> None:
    async def run() -> float:
        pacer = HostPacer(requests_per_second=1000, max_in_flight=1)
        await pacer.acquire()
        waiter = asyncio.create_task(pacer.acquire())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # blocked by the cap, not by spacing
        released = time.monotonic()
        pacer.release()
        await asyncio.wait_for(waiter, 1.0)  # a lost wake-up would otherwise hang
        woke = time.monotonic() - released
        pacer.release()
        return woke

    assert asyncio.run(run()) < 0.05


def test_pause_delays_the_next_request() -> None:
    async def run() -> float:
        pacer = HostPacer(requests_per_second=1000, max_in_flight=2)
        pacer.pause(0.15)
        t0 = time.monotonic()
        async with pacer.slot():
            return time.monotonic() - t0

    assert asyncio.run(run()) >= 0.15 - SLACK


def test_rate_limited_with_retry_after_pauses_that_long() -> None:
    async def run() -> tuple[float, float]:
        pacer = HostPacer(requests_per_second=1000, max_in_flight=2)
        paused = pacer.rate_limited(0.12)
        t0 = time.monotonic()
        await pacer.acquire()
        pacer.release()
        return paused, time.monotonic() - t0

    paused, waited = asyncio.run(run())
    assert paused == 0.12
    assert waited >= 0.12 - SLACK


def test_rate_limited_without_retry_after_doubles_up_to_an_hour() -> None:
    clock = FakeClock()
    pacer = HostPacer(1, 2, clock=clock)
    seen = []
    for _ in range(8):
        seen.append(pacer.rate_limited(None))
        assert pacer.paused_for == seen[-1]
        clock.now += 10_000  # let the pause run out before the next 429
    assert seen == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_pause_never_shortens_and_is_capped_at_a_day() -> None:
    clock = FakeClock()
    pacer = HostPacer(1, 2, clock=clock)
    pacer.pause(100)
    pacer.pause(10)
    assert pacer.paused_for == 100
    pacer.pause(10**7)
    assert pacer.paused_for == 86400
    clock.now += 86400
    assert pacer.paused_for == 0


def test_rate_limited_reports_the_capped_pause() -> None:
    clock = FakeClock()
    pacer = HostPacer(1, 2, clock=clock)
    paused = pacer.rate_limited(10**7)
    assert paused == pacer.paused_for == 86400


def test_failures_are_forgiven_then_back_off() -> None:
    clock = FakeClock()
    pacer = HostPacer(1, 2, clock=clock)
    pauses = []
    for _ in range(11):
        pacer.failed()
        pauses.append(pacer.paused_for)
        clock.now += 10_000
    assert pauses == [0, 0, 5, 10, 20, 40, 80, 160, 320, 600, 600]


def test_weeks_of_failures_and_429s_keep_the_capped_pause() -> None:
    # A registry down for a week fails ~1,000 times in a row at the 10-minute cap: the
    # doubling must stay capped, not overflow a float (60.0 * 2**1024 raises OverflowError).
    clock = FakeClock()
    pacer = HostPacer(1, 2, clock=clock)
    for _ in range(3000):
        pacer.failed()
        clock.now += 10_000
    pacer.failed()
    assert pacer.paused_for == 600
    for _ in range(3000):
        pacer.rate_limited(None)
        clock.now += 10_000
    assert pacer.rate_limited(None) == 3600


def test_success_resets_failures_and_rate_limits() -> None:
    clock = FakeClock()
    pacer = HostPacer(1, 2, clock=clock)
    for _ in range(4):
        pacer.failed()
    pacer.rate_limited(None)
    pacer.rate_limited(None)
    clock.now += 10_000
    pacer.succeeded()
    pacer.failed()
    pacer.failed()
    assert pacer.paused_for == 0  # forgiven again
    pacer.failed()
    assert pacer.paused_for == 5  # first step, not the fifth
    clock.now += 10_000
    assert pacer.rate_limited(None) == 60  # first step, not the third


def test_configure_changes_spacing_and_cap() -> None:
    async def run() -> tuple[bool, float]:
        pacer = HostPacer(requests_per_second=1000, max_in_flight=1)
        pacer.configure(requests_per_second=10, max_in_flight=2)
        await pacer.acquire()
        second = asyncio.create_task(pacer.acquire())
        await asyncio.sleep(0.02)
        blocked_by_spacing = not second.done()
        t0 = time.monotonic()
        await second
        return blocked_by_spacing, time.monotonic() - t0

    blocked, waited = asyncio.run(run())
    assert blocked  # 10/s: the second request waits ~100 ms even though the cap is 2
    assert waited >= 0.1 - 0.02 - SLACK
