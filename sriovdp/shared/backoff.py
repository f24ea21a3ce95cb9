"""Retry delays: capped exponential with jitter (supervisor process: child restarts; plugin worker:
registration retries; health monitor: netlink reopen).

:class:`BackoffPolicy` turns an attempt number into a delay; every retry loop in the project uses
it. :class:`Backoff` is the supervisor's per-child counter on top of it; its clock and random
source are injected, so tests drive it with fakes. The first restart after a stable run is
  immediate: a pool that crashes once after
running for a while is back within the worker's start-up time; a pool that keeps crashing waits
``base``, ``2*base``, ... up to ``cap`` seconds (each scaled by a random factor in
``[1 - jitter, 1]``), never giving up for good.

"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base: float = 0.25  # delay before the second consecutive restart, seconds
    factor: float = 2.0
    cap: float = 30.0  # longest delay, seconds
    jitter: float = 0.2  # fraction of the delay taken off at random
    stable_after: float = 10.0  # a run this long (since READY) resets the failure count

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (1: the first retry waits ``base``)."""
        raw = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        return raw * (1.0 - self.jitter * rand())


class Backoff:
    """Counts consecutive failed runs of one child and turns them into delays."""

    __slots__ = ("_clock", "_random", "_ready_at", "failures", "policy")

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._clock = clock
        self._random = rand
        self._ready_at: float | None = None
        self.failures = 0

    def ready(self) -> None:
        """The child said READY: its run starts counting towards stability."""
        self._ready_at = self._clock()

    def ended(self) -> None:
        """The child ended unasked: one more failure (the first one after a stable run)."""
        stable = (
            self._ready_at is not None
            and self._clock() - self._ready_at >= self.policy.stable_after
        )
        self._ready_at = None
        self.failures = 1 if stable else self.failures + 1

    def reset(self) -> None:
        """An operator asked for the start (restart, reload): no waiting."""
        self.failures = 0
        self._ready_at = None

    def delay(self) -> float:
        """Seconds to wait before the next start, given the failures counted so far."""
        if self.failures <= 1:
            return 0.0
        return self.policy.delay(self.failures - 1, self._random)
