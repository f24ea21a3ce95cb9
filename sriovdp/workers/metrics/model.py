"""What the bus said about the node, kept for scrapes and probes (metrics process).

:class:`NodeView` applies bus messages (main thread) and answers the HTTP threads under one lock.
Counters of a pool survive its worker's restarts: when a :class:`PoolStats` comes from a new pid,
the last counts of the previous process are folded into a base (calls in the last second before
a crash, not yet reported, are lost). A restart of this child starts every counter again, which
Prometheus' ``rate()`` and ``increase()`` treat as a counter reset.

Liveness and readiness follow ``status``: live while the supervisor's report is fresh (it sends
one at least every ``interval`` seconds from its loop, so an old one means a stuck loop); ready
when every child is RUNNING, every pool registered and the last reload was not refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sriovdp.shared.messages import (
    Envelope,
    LinkState,
    PoolStats,
    PoolSummary,
    SupervisorReport,
    WorkerHeartbeat,
    WorkerReady,
    WorkerStateChanged,
)

#: a supervisor report older than this many intervals: the supervisor's loop is stuck
STALE_INTERVALS = 3.0


@dataclass(slots=True)
class PoolTotals:
    """A pool's counters over every worker process that served it."""

    resource: str
    pid: int = 0
    base: PoolStats | None = None  # the sum over earlier processes
    last: PoolStats | None = None  # the current process's latest report

    def apply(self, stats: PoolStats) -> None:
        if self.last is not None and stats.pid != self.last.pid:
            self.base = self.last if self.base is None else add_stats(self.base, self.last)
        self.resource = stats.resource
        self.last = stats

    def total(self) -> PoolStats | None:
        if self.last is None or self.base is None:
            return self.last
        return add_stats(self.base, self.last)


def add_stats(a: PoolStats, b: PoolStats) -> PoolStats:
    """The sum of two reports of one pool (``b``'s bucket bounds win if they differ)."""
    calls = dict(zip(a.allocate_outcomes, a.allocate_calls, strict=True))
    for outcome, n in zip(b.allocate_outcomes, b.allocate_calls, strict=True):
        calls[outcome] = calls.get(outcome, 0) + n
    same_buckets = a.latency_bounds == b.latency_bounds
    counts = (
        tuple(x + y for x, y in zip(a.latency_counts, b.latency_counts, strict=True))
        if same_buckets
        else b.latency_counts
    )
    outcomes = tuple(sorted(calls))
    return PoolStats(
        name=b.name,
        resource=b.resource,
        pid=b.pid,
        allocate_outcomes=outcomes,
        allocate_calls=tuple(calls[o] for o in outcomes),
        allocated_devices=a.allocated_devices + b.allocated_devices,
        latency_bounds=b.latency_bounds,
        latency_counts=counts,
        latency_sum=(a.latency_sum if same_buckets else 0.0) + b.latency_sum,
        preferred_calls=a.preferred_calls + b.preferred_calls,
        unhealthy_requests=a.unhealthy_requests + b.unhealthy_requests,
        registrations=a.registrations + b.registrations,
    )


@dataclass(frozen=True, slots=True)
class ChildView:
    name: str
    role: str
    state: str
    restarts: int
    exit_code: int | None
    heartbeat_age: float | None


@dataclass(slots=True)
class NodeView:
    """Every fact the metrics need; :meth:`apply` from the bus thread, the rest from anywhere."""

    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    report: SupervisorReport | None = None
    report_at: float | None = None
    report_seq: int = 0
    links: dict[str, LinkState] = field(default_factory=dict)
    summaries: dict[str, PoolSummary] = field(default_factory=dict)
    pools: dict[str, PoolTotals] = field(default_factory=dict)
    #: child name -> (state, pid) from WorkerStateChanged: newer than the last report
    states: dict[str, tuple[str, int]] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    def apply(self, env: Envelope) -> None:
        msg = env.message
        now = self.clock()
        with self.lock:
            if isinstance(msg, WorkerHeartbeat | WorkerReady):
                self.last_seen[msg.name] = now
            elif isinstance(msg, LinkState):
                self.links[msg.ifname] = msg
            elif isinstance(msg, PoolSummary):
                self.summaries[msg.name] = msg
            elif isinstance(msg, PoolStats):
                totals = self.pools.setdefault(msg.name, PoolTotals(msg.resource))
                totals.apply(msg)
            elif isinstance(msg, WorkerStateChanged):
                if env.seq < self.report_seq:  # a replay older than the report applied
                    return
                self.states[msg.name] = (msg.state, msg.pid)
                if msg.state in ("STARTING", "RUNNING"):
                    self.last_seen[msg.name] = now
            elif isinstance(msg, SupervisorReport):
                self.report, self.report_at, self.report_seq = msg, now, env.seq
                # the report's states are as new as the state messages before it
                self.states = {
                    name: (state, self.states.get(name, ("", 0))[1])
                    for name, state in zip(msg.children, msg.states, strict=True)
                }

    # -- read side (call with the lock held) ------------------------------------------------------

    def wanted(self, name: str) -> bool:
        """A child the supervisor still has (all of them until its first report)."""
        return self.report is None or name in self.report.children

    def children(self) -> list[ChildView]:
        report = self.report
        if report is None:
            return []
        now = self.clock()
        out = []
        for i, name in enumerate(report.children):
            seen = self.last_seen.get(name)
            out.append(
                ChildView(
                    name=name,
                    role=report.roles[i],
                    state=self.states.get(name, (report.states[i], 0))[0],
                    restarts=report.restarts[i],
                    exit_code=report.exit_codes[i] if report.exited[i] else None,
                    heartbeat_age=None if seen is None else now - seen,
                )
            )
        return out

    def registered(self, name: str) -> bool:
        """The pool's current worker said it is registered (not a dead predecessor)."""
        summary = self.summaries.get(name)
        if summary is None or not summary.registered:
            return False
        pid = self.states.get(name, ("", 0))[1]
        return pid in (0, summary.pid)

    def report_age(self) -> float | None:
        return None if self.report_at is None else self.clock() - self.report_at

    def live(self) -> tuple[bool, str]:
        """The supervisor answers on the bus and its loop is not stuck."""
        report, age = self.report, self.report_age()
        if report is None or age is None:
            return False, "no report from the supervisor yet"
        limit = STALE_INTERVALS * report.interval
        if age > limit:
            return False, f"last supervisor report {age:.1f}s ago (limit {limit:g}s)"
        return True, f"supervisor pid {report.pid} reported {age:.1f}s ago"

    def ready(self) -> tuple[bool, list[str]]:
        """Every child RUNNING, every pool registered, last reload not refused (and live)."""
        live, why = self.live()
        if not live:
            return False, [why]
        report = self.report
        assert report is not None
        problems = []
        if report.last_reload_refused:
            problems.append("the last reload was refused (invalid config)")
        for child in self.children():
            if child.state != "RUNNING":
                problems.append(f"{child.name} is {child.state}")
            elif child.role == "plugin" and not self.registered(child.name):
                summary = self.summaries.get(child.name)
                pool = summary.resource if summary is not None else child.name
                problems.append(f"{pool} is not registered with the kubelet")
        return not problems, problems
