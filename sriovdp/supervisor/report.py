"""What the supervisor tells the metrics child about itself (supervisor process).

:class:`ReportSchedule` decides when a :class:`~sriovdp.shared.messages.SupervisorReport` goes out:
when its content changed, at most once per ``min_gap`` seconds (a burst of state changes or of
dropped frames costs one message), and at least every ``interval`` seconds even when nothing
changed, so the metrics child can tell a live supervisor loop from a stuck one (``/healthz``).
The loop builds a report only after a wake-up that brought news, or when :meth:`due` says so: a
heartbeat alone costs nothing here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sriovdp.shared.messages import SupervisorReport
from sriovdp.supervisor.child import Child


@dataclass(slots=True)
class ReloadCounts:
    applied: int = 0
    refused: int = 0
    last_refused: bool = False


def build_report(
    *,
    started: float,
    interval: float,
    generation: int,
    reloads: ReloadCounts,
    bus_dropped: int,
    children: Iterable[Child],
) -> SupervisorReport:
    rows = list(children)
    return SupervisorReport(
        pid=os.getpid(),
        started=started,
        interval=interval,
        generation=generation,
        reloads_applied=reloads.applied,
        reloads_refused=reloads.refused,
        last_reload_refused=reloads.last_refused,
        bus_dropped=bus_dropped,
        children=tuple(c.name for c in rows),
        roles=tuple(c.spec.role for c in rows),
        states=tuple(c.state.name for c in rows),
        restarts=tuple(c.restarts for c in rows),
        exited=tuple(c.last_exit_code is not None for c in rows),
        exit_codes=tuple(c.last_exit_code or 0 for c in rows),
    )


class ReportSchedule:
    """When to publish: on change (at most once per ``min_gap``) and every ``interval``."""

    def __init__(self, interval: float, min_gap: float = 1.0) -> None:
        self.interval = interval
        self.min_gap = min_gap
        self._last: SupervisorReport | None = None
        self._sent_at: float | None = None
        self._dirty = True

    def changed(self) -> None:
        """Something the report shows may have changed: build one at the next :meth:`due`."""
        self._dirty = True

    def due(self) -> float:
        """The monotonic time at which :meth:`maybe_send` has something to do."""
        if self._sent_at is None:
            return 0.0
        if self._dirty:
            return self._sent_at + self.min_gap
        return self._sent_at + self.interval

    def maybe_send(
        self,
        now: float,
        build: Callable[[], SupervisorReport],
        publish: Callable[[SupervisorReport], None],
    ) -> None:
        if now < self.due():
            return
        report = build()
        self._dirty = False
        fresh = self._sent_at is not None and now < self._sent_at + self.interval
        if report == self._last and fresh:
            return  # nothing new, and the periodic one is not due yet
        self._last, self._sent_at = report, now
        publish(report)
