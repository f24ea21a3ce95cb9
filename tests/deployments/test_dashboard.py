"""deployments/grafana-dashboard.json: valid JSON whose every query names only metrics the metrics
child really exports (taken from a scrape of the collector, not from a list kept by hand)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sriovdp.shared.messages import (
    Envelope,
    LinkState,
    Message,
    PoolStats,
    PoolSummary,
    SupervisorReport,
    WorkerHeartbeat,
)
from sriovdp.workers.metrics.collector import NodeCollector
from sriovdp.workers.metrics.model import NodeView
from sriovdp.workers.metrics_report import ALLOCATE_BUCKETS
from tests.deployments.conftest import DEPLOYMENTS

DASHBOARD = DEPLOYMENTS / "grafana-dashboard.json"
NAME = re.compile(r"\bsriovdp_[a-z0-9_]+\b")


def exported() -> set[str]:
    """Every sample name in a scrape of a view that has seen one message of each kind."""
    view = NodeView()
    messages: list[Message] = [
        PoolSummary("p", "x/p", 1, True, 4, 4, ""),
        PoolStats(
            "p",
            "x/p",
            1,
            ("ok",),
            (1,),
            1,
            ALLOCATE_BUCKETS,
            (1, *([0] * len(ALLOCATE_BUCKETS))),
            0.1,
            1,
            0,
            1,
        ),
        LinkState("ens1", 2, "UP", True, True),
        WorkerHeartbeat("p", 1),
        SupervisorReport(
            1, 1.0, 15.0, 1, 0, 0, False, 0, ("p",), ("plugin",), ("EXITED",), (1,), (True,), (-9,)
        ),
    ]
    for seq, message in enumerate(messages, 1):
        view.apply(Envelope(message.topic(), message.KIND, "t", seq, 0.0, message))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    text = generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: targets' ``expr`` and query variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and "query" in value:
                yield str(value["query"])
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def test_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    found = list(queries(dashboard))
    assert len(found) >= 15
    names = exported()
    for query in found:
        used = set(NAME.findall(query))
        assert used, f"no sriov-dp metric in {query!r}"
        assert used <= names, f"{sorted(used - names)} not exported (query {query!r})"


def test_the_dashboard_covers_pools_allocate_restarts_and_links() -> None:
    text = DASHBOARD.read_text()
    for name in (
        "sriovdp_pool_devices",
        "sriovdp_pool_devices_healthy",
        "sriovdp_allocated_devices_total",
        "sriovdp_allocate_requests_total",
        "sriovdp_allocate_duration_seconds_bucket",
        "sriovdp_child_restarts_total",
        "sriovdp_link_up",
    ):
        assert name in text, name


def test_panel_ids_are_unique_and_every_panel_has_a_place() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]


def test_a_misspelt_metric_would_be_caught() -> None:
    assert "sriovdp_pool_device" not in exported()
    assert set(NAME.findall('rate(sriovdp_pool_device{instance="a"}[5m])')) == {
        "sriovdp_pool_device"
    }
