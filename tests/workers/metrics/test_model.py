"""What the metrics child makes of bus messages (``sriovdp.workers.metrics.model`` and
``collector``): counters kept across a worker's restarts, removed children dropped, liveness from
the age of the supervisor's report, readiness as ``status`` sees it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sriovdp.shared.messages import (
    Envelope,
    LinkState,
    Message,
    PoolStats,
    PoolSummary,
    SupervisorReport,
    WorkerStateChanged,
)
from sriovdp.workers.metrics.collector import METRICS, NodeCollector
from sriovdp.workers.metrics.model import NodeView
from sriovdp.workers.metrics_report import ALLOCATE_BUCKETS

_seq = iter(range(1, 1_000_000))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def env(message: Message) -> Envelope:
    return Envelope(message.topic(), message.KIND, "t", next(_seq), 0.0, message)


def stats(pid: int, ok: int, refused: int = 0, buckets: tuple[int, ...] = ()) -> PoolStats:
    counts = buckets or (ok + refused, *([0] * len(ALLOCATE_BUCKETS)))
    return PoolStats(
        "p", "x/p", pid, ("failed_precondition", "ok"), (refused, ok), ok, ALLOCATE_BUCKETS,
        counts, 0.001 * (ok + refused), 2, refused, 1,
    )  # fmt: skip


def report(**change: object) -> SupervisorReport:
    fields: dict[str, object] = {
        "pid": 1, "started": 1000.0, "interval": 15.0, "generation": 1, "reloads_applied": 0,
        "reloads_refused": 0, "last_reload_refused": False, "bus_dropped": 0,
        "children": ("p", "metrics"), "roles": ("plugin", "metrics"),
        "states": ("RUNNING", "RUNNING"), "restarts": (0, 0), "exited": (False, False),
        "exit_codes": (0, 0),
    }  # fmt: skip
    fields.update(change)
    return SupervisorReport(**fields)  # type: ignore[arg-type]


def samples(view: NodeView) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_survive_a_worker_restart() -> None:
    view = NodeView()
    view.apply(env(stats(10, ok=3, refused=1)))
    view.apply(env(stats(10, ok=5, refused=1)))  # same process: the newer total replaces
    view.apply(env(stats(11, ok=2)))  # a new process starts from zero
    s = samples(view)
    assert s[("sriovdp_allocate_requests_total", (("outcome", "ok"), ("resource", "x/p")))] == 7
    refused = (("outcome", "failed_precondition"), ("resource", "x/p"))
    assert s[("sriovdp_allocate_requests_total", refused)] == 1
    assert s[("sriovdp_allocate_unhealthy_requests_total", (("resource", "x/p"),))] == 1
    assert s[("sriovdp_allocate_duration_seconds_count", (("resource", "x/p"),))] == 8
    assert s[("sriovdp_pool_registrations_total", (("resource", "x/p"),))] == 2
    assert s[("sriovdp_preferred_allocation_requests_total", (("resource", "x/p"),))] == 4


def test_histogram_buckets_are_cumulative() -> None:
    view = NodeView()
    counts = (1, 2, 0, 3, *([0] * (len(ALLOCATE_BUCKETS) - 3)))
    view.apply(env(stats(10, ok=6, buckets=counts)))
    s = samples(view)
    le = {k[1][0][1]: v for k, v in s.items() if k[0].endswith("_bucket")}
    assert (le["0.0001"], le["0.00025"], le["0.0005"], le["0.001"], le["+Inf"]) == (1, 3, 3, 6, 6)


def test_a_removed_pool_and_a_vanished_link_leave_the_metrics() -> None:
    view = NodeView()
    view.apply(env(PoolSummary("p", "x/p", 10, True, 4, 4, "")))
    view.apply(env(PoolSummary("gone", "x/gone", 12, True, 4, 4, "")))
    view.apply(env(LinkState("ens1", 3, "UP", True, True)))
    view.apply(env(LinkState("vf0", 4, "DOWN", False, False)))
    view.apply(env(report()))
    s = samples(view)
    assert ("sriovdp_pool_devices", (("resource", "x/p"),)) in s
    assert ("sriovdp_pool_devices", (("resource", "x/gone"),)) not in s
    assert s[("sriovdp_link_up", (("interface", "ens1"),))] == 1
    assert ("sriovdp_link_up", (("interface", "vf0"),)) not in s


def test_every_exported_name_is_declared_and_follows_the_conventions() -> None:
    view = NodeView()
    view.apply(env(stats(10, ok=1)))
    view.apply(env(PoolSummary("p", "x/p", 10, True, 4, 4, "")))
    view.apply(env(LinkState("ens1", 3, "UP", True, True)))
    view.apply(env(report(exited=(True, False), exit_codes=(-9, 0))))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    names = {f.name for f in families}
    declared = {n.removesuffix("_total") for n in METRICS}
    assert names == declared
    for family in families:
        assert family.name.startswith("sriovdp_")
        kind = METRICS.get(family.name, METRICS.get(family.name + "_total", ("", "")))[0]
        assert family.type == kind.replace("info", "gauge"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


def test_liveness_follows_the_age_of_the_supervisors_report() -> None:
    clock = Clock()
    view = NodeView(clock=clock)
    assert view.live() == (False, "no report from the supervisor yet")
    view.apply(env(report()))
    assert view.live()[0]
    clock.now += 3 * 15.0 - 0.1
    assert view.live()[0]
    clock.now += 0.2
    live, why = view.live()
    assert not live
    assert "limit 45s" in why


def test_readiness_needs_running_children_registered_pools_and_an_accepted_reload() -> None:
    view = NodeView()
    view.apply(env(WorkerStateChanged("p", "RUNNING", 10)))
    view.apply(env(report()))
    assert view.ready() == (False, ["p is not registered with the kubelet"])  # no summary yet
    view.apply(env(PoolSummary("p", "x/p", 10, True, 4, 4, "")))
    assert view.ready() == (True, [])
    view.apply(env(report(last_reload_refused=True)))
    assert view.ready() == (False, ["the last reload was refused (invalid config)"])
    view.apply(env(report()))
    view.apply(env(WorkerStateChanged("p", "STARTING", 11)))  # a new process: old summary void
    ready, problems = view.ready()
    assert not ready
    assert problems == ["p is STARTING"]
    view.apply(env(WorkerStateChanged("p", "RUNNING", 11)))
    assert view.ready() == (False, ["x/p is not registered with the kubelet"])


def test_a_state_replayed_after_a_newer_report_is_ignored() -> None:
    view = NodeView()
    old = env(WorkerStateChanged("p", "STARTING", 10))
    view.apply(env(report()))
    view.apply(old)  # sequence number older than the report's: the broker's replay order
    assert [c.state for c in view.children()] == ["RUNNING", "RUNNING"]
