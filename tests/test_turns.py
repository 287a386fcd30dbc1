"""Turns: a worker doing bulk work sleeps briefly every few milliseconds of it, so the event
loop's thread gets the GIL (exporter/turns.py says why). Timing is the benchmark's job
(bench/scale.py: loop stall during a state save); here, when the turns are taken."""

from __future__ import annotations

import pytest

from exporter import turns
from exporter.turns import TURN_SECONDS, WORK_SECONDS, Turns


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(turns, "_now", fake.perf_counter)
    monkeypatch.setattr(turns, "_sleep", fake.sleep)
    return fake


def test_no_turn_before_work_seconds_of_work(clock: _Clock) -> None:
    turn = Turns()
    for _ in range(100):
        clock.now += WORK_SECONDS / 200
        turn()
    assert clock.sleeps == []


def test_one_turn_per_work_seconds_of_work(clock: _Clock) -> None:
    turn = Turns()
    for _ in range(1000):  # 10 * WORK_SECONDS of work in small pieces
        clock.now += WORK_SECONDS / 100
        turn()
    assert len(clock.sleeps) in (9, 10)
    assert set(clock.sleeps) == {TURN_SECONDS}


def test_a_long_piece_of_work_is_followed_by_one_turn(clock: _Clock) -> None:
    turn = Turns()
    clock.now += 50 * WORK_SECONDS
    turn()
    turn()  # the clock starts again after the turn
    assert clock.sleeps == [TURN_SECONDS]


def test_the_state_save_takes_turns(clock: _Clock, tmp_path) -> None:
    """StatusStore.save encodes its rows with turns: a real save whose rows each take a
    quarter of WORK_SECONDS sleeps once per four rows."""
    from dataclasses import replace

    from bench.render import populated_store

    store = populated_store(40)
    for s in store.snapshot():
        store.update(s.name, lambda r: replace(r))
    packed: list[str] = []

    def slow_pack(record):  # type: ignore[no-untyped-def]
        packed.append(record.name)
        clock.now += WORK_SECONDS * 0.26  # a little over a quarter: no rounding at the edge
        return None

    store.keep_expositions(slow_pack, "test")
    assert store.save(tmp_path / "state.db") == 40
    assert len(packed) == 40
    assert len(clock.sleeps) == 9  # before rows 5, 9, ..., 37
