"""A pool's request counters and their report on the bus (plugin worker process).

The servicer counts on its event loop (thread ``grpc-loop``); the metrics child learns the
counters from :class:`~sriovdp.shared.messages.PoolStats` messages, full state since the worker
started, sent at most once per :attr:`PoolCounters.min_interval` after a change (a call only
schedules the next report when none is pending) and with every heartbeat. Never one bus message
per call, and no prometheus_client here: workers carry nothing of it.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import threading
from collections.abc import Callable

from sriovdp.shared.messages import PoolStats

#: Allocate latency buckets, seconds: the answers are precomputed, so calls take well under a
#: millisecond; the upper buckets catch a loop held up by something else
ALLOCATE_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class PoolCounters:
    """Counters of one pool's RPCs; every ``note_*`` runs on the worker's event loop.

    ``publish`` is called with a :class:`PoolStats` (from the loop, or from the caller of
    :meth:`report`); ``None`` until the worker is on the bus.
    """

    def __init__(self, name: str, resource: str, min_interval: float = 1.0) -> None:
        self.name = name
        self.resource = resource
        self.min_interval = min_interval
        self.publish: Callable[[PoolStats], None] | None = None
        self.outcomes: dict[str, int] = {"ok": 0}
        self.allocated_devices = 0
        self.latency_counts = [0] * (len(ALLOCATE_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.preferred_calls = 0
        self.unhealthy_requests = 0
        self.registrations = 0
        self._pending = False
        self._lock = threading.Lock()  # report() from MainThread, notes on grpc-loop

    # -- counting (event loop) -------------------------------------------------------------------

    def note_allocate(
        self, outcome: str, seconds: float, devices: int, unhealthy: bool = False
    ) -> None:
        """One Allocate call; ``unhealthy``: it named a device that was Unhealthy at the time
        (allocated all the same: its link flapped after the kubelet chose it)."""
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.latency_counts[bisect.bisect_left(ALLOCATE_BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.allocated_devices += devices
            if unhealthy:
                self.unhealthy_requests += 1
        self._changed()

    def note_preferred(self) -> None:
        with self._lock:
            self.preferred_calls += 1
        self._changed()

    def note_registered(self) -> None:
        """A successful Register (any thread)."""
        with self._lock:
            self.registrations += 1
        self.report()

    def _changed(self) -> None:
        """Schedules one report ``min_interval`` from now unless one is pending already."""
        if self._pending or self.publish is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a test calling the servicer directly)
            self.report()
            return
        self._pending = True
        loop.call_later(self.min_interval, self.report)

    # -- reporting (any thread) ------------------------------------------------------------------

    def snapshot(self) -> PoolStats:
        with self._lock:
            self._pending = False
            outcomes = sorted(self.outcomes)
            return PoolStats(
                name=self.name,
                resource=self.resource,
                pid=os.getpid(),
                allocate_outcomes=tuple(outcomes),
                allocate_calls=tuple(self.outcomes[o] for o in outcomes),
                allocated_devices=self.allocated_devices,
                latency_bounds=ALLOCATE_BUCKETS,
                latency_counts=tuple(self.latency_counts),
                latency_sum=self.latency_sum,
                preferred_calls=self.preferred_calls,
                unhealthy_requests=self.unhealthy_requests,
                registrations=self.registrations,
            )

    def report(self) -> None:
        """Publishes the counters now (heartbeat, registration, the pending report)."""
        if self.publish is not None:
            self.publish(self.snapshot())
