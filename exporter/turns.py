"""Turns for the event loop while a worker thread does seconds of bulk work (a state save, a
background rendering).

CPython gives the GIL to a thread that waits for it only once it has waited 5 ms (the switch
interval) with no switch in between. A worker whose C calls (deflate, SQLite) each release and
retake the GIL for a few microseconds retakes it before the waiting thread has woken up, and
every retake counts as a switch: the event loop can wait for tens of milliseconds (a 1,000-row
state save stalled it 25-42 ms in bench/scale.py, 6 ms with turns). A short real sleep every few
milliseconds of work hands the GIL over for certain.
"""

from __future__ import annotations

import time

WORK_SECONDS = 0.004  # of work between two turns: under the loop's 5 ms tick
TURN_SECONDS = 0.0002  # long enough for a waiting thread to wake up and take the GIL

# The clock and the sleep, as names of this module: a test replaces them here, never in `time`
# (other threads would see a fake clock).
_now = time.perf_counter
_sleep = time.sleep


class Turns:
    """Call it between two pieces of bulk work: every WORK_SECONDS it sleeps TURN_SECONDS."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = _now() + WORK_SECONDS

    def __call__(self) -> None:
        if _now() >= self._next:
            _sleep(TURN_SECONDS)
            self._next = _now() + WORK_SECONDS
