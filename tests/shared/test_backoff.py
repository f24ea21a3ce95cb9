"""Capped exponential backoff with jitter, reset after a stable run (fake clock and random)."""

from __future__ import annotations

import pytest

from sriovdp.shared.backoff import Backoff, BackoffPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


POLICY = BackoffPolicy(base=0.5, factor=2.0, cap=4.0, jitter=0.2, stable_after=10.0)


def test_first_failure_restarts_at_once_then_doubles_up_to_the_cap() -> None:
    b = Backoff(POLICY, clock=Clock(), rand=lambda: 0.0)
    delays = []
    for _ in range(7):
        b.ended()
        delays.append(b.delay())
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize("r", [0.0, 0.5, 0.999])
def test_jitter_takes_off_at_most_its_fraction(r: float) -> None:
    b = Backoff(POLICY, clock=Clock(), rand=lambda: r)
    for _ in range(3):
        b.ended()
    assert b.delay() == pytest.approx(1.0 * (1 - 0.2 * r))
    assert 0.8 <= b.delay() <= 1.0


def test_a_stable_run_resets_and_a_short_one_does_not() -> None:
    clock = Clock()
    b = Backoff(POLICY, clock=clock, rand=lambda: 0.0)
    for _ in range(4):
        b.ended()
    assert b.delay() == 2.0
    b.ready()
    clock.now += 9.9  # not stable yet
    b.ended()
    assert b.failures == 5
    b.ready()
    clock.now += 10.0
    b.ended()
    assert b.failures == 1
    assert b.delay() == 0.0


def test_reset_by_operator() -> None:
    b = Backoff(POLICY, clock=Clock(), rand=lambda: 0.0)
    for _ in range(5):
        b.ended()
    b.reset()
    assert b.failures == 0
    assert b.delay() == 0.0
