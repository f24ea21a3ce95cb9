"""The node's facts as Prometheus metric families (metrics process).

A custom collector (``prometheus_client``'s way of exporting state kept elsewhere): every scrape
reads :class:`~sriovdp.workers.metrics.model.NodeView` under its lock and yields fresh families;
``prometheus_client`` writes the exposition format. :data:`METRICS` names every metric with its
type and help text; docs/operations.md lists the same, and a test checks that the dashboard only
queries these.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import sriovdp
from sriovdp.supervisor.states import ChildState
from sriovdp.workers.metrics.model import NodeView

#: name as exposed (a histogram's without its _bucket, _count and _sum) -> (type, help); the info
#: metric reads as a gauge in the text format
METRICS: dict[str, tuple[str, str]] = {
    "sriovdp_pool_devices": ("gauge", "Devices in the pool."),
    "sriovdp_pool_devices_healthy": ("gauge", "Healthy devices in the pool."),
    "sriovdp_pool_registered": ("gauge", "1 while the pool's worker is registered."),
    "sriovdp_pool_registrations_total": ("counter", "Successful Register calls to the kubelet."),
    "sriovdp_allocate_requests_total": (
        "counter",
        'Allocate calls by outcome: "ok" or the gRPC code of the refusal, lower case.',
    ),
    "sriovdp_allocated_devices_total": ("counter", "Devices handed out by successful Allocates."),
    "sriovdp_allocate_duration_seconds": ("histogram", "Time the plugin spent in Allocate."),
    "sriovdp_preferred_allocation_requests_total": ("counter", "GetPreferredAllocation calls."),
    "sriovdp_allocate_unhealthy_requests_total": (
        "counter",
        "Allocate calls naming a device that was unhealthy at the time (allocated all the same).",
    ),
    "sriovdp_child_state": ("gauge", "1 for the child's current state, 0 for the others."),
    "sriovdp_child_restarts_total": ("counter", "Starts of the child after its first."),
    "sriovdp_child_last_exit_code": (
        "gauge",
        "Return code of the child's last process: exit status, or minus the signal number.",
    ),
    "sriovdp_child_heartbeat_age_seconds": (
        "gauge",
        "Seconds since the child's last heartbeat (or READY) seen on the bus.",
    ),
    "sriovdp_link_operstate": (
        "gauge",
        "1 for the interface's operational state as the health monitor last saw it.",
    ),
    "sriovdp_link_up": ("gauge", "1 while the link is present, has carrier and is UP."),
    "sriovdp_config_generation": ("gauge", "Config generation: 1 at start, +1 per applied reload."),
    "sriovdp_config_reloads_total": ("counter", "Reloads by outcome: applied or refused."),
    "sriovdp_config_last_reload_successful": (
        "gauge",
        "0 when the last reload was refused (the previous config still runs).",
    ),
    "sriovdp_bus_dropped_frames_total": (
        "counter",
        "Bus frames the broker refused as malformed or could not forward.",
    ),
    "sriovdp_supervisor_start_time_seconds": ("gauge", "Unix time the supervisor started."),
    "sriovdp_supervisor_uptime_seconds": ("gauge", "Seconds since the supervisor started."),
    "sriovdp_supervisor_report_age_seconds": (
        "gauge",
        "Seconds since the supervisor's last report on the bus (stale: its loop is stuck).",
    ),
    "sriovdp_ready": ("gauge", "1 when /readyz answers 200."),
    "sriovdp_build_info": ("info", "Version of sriov-dp and of Python."),
}

_STATES = [s.name for s in ChildState]


def _family(name: str, labels: list[str]) -> GaugeMetricFamily | CounterMetricFamily:
    kind, text = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name, text, labels=labels)
    return GaugeMetricFamily(name, text, labels=labels)


class NodeCollector(Collector):
    def __init__(self, view: NodeView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        with view.lock:
            yield from self._pools(view)
            yield from self._children(view)
            yield from self._links(view)
            yield from self._supervisor(view)
        yield InfoMetricFamily(
            "sriovdp_build",
            METRICS["sriovdp_build_info"][1],
            value={"version": sriovdp.__version__, "python_version": platform.python_version()},
        )

    @staticmethod
    def _pools(view: NodeView) -> Iterator[Metric]:
        res = ["resource"]
        devices = _family("sriovdp_pool_devices", res)
        healthy = _family("sriovdp_pool_devices_healthy", res)
        registered = _family("sriovdp_pool_registered", res)
        for name, summary in sorted(view.summaries.items()):
            if view.wanted(name):
                devices.add_metric([summary.resource], summary.devices_total)
                healthy.add_metric([summary.resource], summary.devices_healthy)
                registered.add_metric([summary.resource], int(view.registered(name)))
        registrations = _family("sriovdp_pool_registrations_total", res)
        calls = _family("sriovdp_allocate_requests_total", [*res, "outcome"])
        allocated = _family("sriovdp_allocated_devices_total", res)
        preferred = _family("sriovdp_preferred_allocation_requests_total", res)
        unhealthy = _family("sriovdp_allocate_unhealthy_requests_total", res)
        latency = HistogramMetricFamily(
            "sriovdp_allocate_duration_seconds",
            METRICS["sriovdp_allocate_duration_seconds"][1],
            labels=res,
        )
        for name, totals in sorted(view.pools.items()):
            stats = totals.total()
            if stats is None or not view.wanted(name):
                continue
            r = [stats.resource]
            registrations.add_metric(r, stats.registrations)
            for outcome, n in zip(stats.allocate_outcomes, stats.allocate_calls, strict=True):
                calls.add_metric([*r, outcome], n)
            allocated.add_metric(r, stats.allocated_devices)
            preferred.add_metric(r, stats.preferred_calls)
            unhealthy.add_metric(r, stats.unhealthy_requests)
            buckets, running = [], 0
            bounds = [*(f"{b:g}" for b in stats.latency_bounds), "+Inf"]
            for bound, n in zip(bounds, stats.latency_counts, strict=True):
                running += n
                buckets.append((bound, running))
            latency.add_metric(r, buckets, stats.latency_sum)
        yield from (devices, healthy, registered, registrations, calls, allocated, latency)
        yield from (preferred, unhealthy)

    @staticmethod
    def _children(view: NodeView) -> Iterator[Metric]:
        labels = ["child", "role"]
        state = _family("sriovdp_child_state", [*labels, "state"])
        restarts = _family("sriovdp_child_restarts_total", labels)
        exit_code = _family("sriovdp_child_last_exit_code", labels)
        age = _family("sriovdp_child_heartbeat_age_seconds", labels)
        for child in view.children():
            who = [child.name, child.role]
            for name in _STATES:
                state.add_metric([*who, name], int(name == child.state))
            restarts.add_metric(who, child.restarts)
            if child.exit_code is not None:
                exit_code.add_metric(who, child.exit_code)
            if child.heartbeat_age is not None:
                age.add_metric(who, round(child.heartbeat_age, 3))
        yield from (state, restarts, exit_code, age)

    @staticmethod
    def _links(view: NodeView) -> Iterator[Metric]:
        operstate = _family("sriovdp_link_operstate", ["interface", "operstate"])
        up = _family("sriovdp_link_up", ["interface"])
        for ifname, link in sorted(view.links.items()):
            if not link.present:
                continue  # gone: its series end (a VF's netdev comes and goes with its driver)
            operstate.add_metric([ifname, link.operstate], 1)
            up.add_metric([ifname], int(link.healthy))
        yield from (operstate, up)

    @staticmethod
    def _supervisor(view: NodeView) -> Iterator[Metric]:
        report = view.report
        ready = _family("sriovdp_ready", [])
        ready.add_metric([], int(view.ready()[0]))
        yield ready
        if report is None:
            return
        generation = _family("sriovdp_config_generation", [])
        generation.add_metric([], report.generation)
        reloads = _family("sriovdp_config_reloads_total", ["outcome"])
        reloads.add_metric(["applied"], report.reloads_applied)
        reloads.add_metric(["refused"], report.reloads_refused)
        last_ok = _family("sriovdp_config_last_reload_successful", [])
        last_ok.add_metric([], int(not report.last_reload_refused))
        dropped = _family("sriovdp_bus_dropped_frames_total", [])
        dropped.add_metric([], report.bus_dropped)
        start = _family("sriovdp_supervisor_start_time_seconds", [])
        start.add_metric([], report.started)
        uptime = _family("sriovdp_supervisor_uptime_seconds", [])
        uptime.add_metric([], round(max(0.0, view.wall() - report.started), 3))
        age = _family("sriovdp_supervisor_report_age_seconds", [])
        age.add_metric([], round(view.report_age() or 0.0, 3))
        yield from (generation, reloads, last_ok, dropped, start, uptime, age)
