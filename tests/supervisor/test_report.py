"""When the supervisor publishes its report (``sriovdp.supervisor.report``): on change at most
once per ``min_gap``, and every ``interval`` without a change."""

from __future__ import annotations

from sriovdp.shared.messages import SupervisorReport
from sriovdp.supervisor.report import ReloadCounts, ReportSchedule, build_report


def _report(generation: int) -> SupervisorReport:
    return build_report(
        started=1.0,
        interval=15.0,
        generation=generation,
        reloads=ReloadCounts(),
        bus_dropped=0,
        children=[],
    )


def test_changes_are_sent_at_most_once_per_gap_and_repeats_every_interval() -> None:
    sched = ReportSchedule(interval=15.0, min_gap=1.0)
    sent: list[tuple[float, int]] = []
    generation = [1]

    def step(now: float) -> None:
        sched.maybe_send(
            now, lambda: _report(generation[0]), lambda r: sent.append((now, r.generation))
        )

    step(100.0)
    assert sent == [(100.0, 1)]
    generation[0] = 2
    sched.changed()
    assert sched.due() == 101.0
    step(100.5)  # too soon after the last one
    assert len(sent) == 1
    step(101.0)
    assert sent[-1] == (101.0, 2)
    sched.changed()  # a reconcile that changed nothing: built, compared, not sent
    step(102.0)
    assert len(sent) == 2
    assert sched.due() == 116.0
    step(116.0)  # nothing changed, but the interval is over: sent again
    assert sent[-1] == (116.0, 2)
