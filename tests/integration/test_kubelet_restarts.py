"""End to end: kubelet restarts and lost sockets, healed by re-registration (kubelet watcher).

The real supervisor with 4 pools against the kubelet stand-in (no root needed): every restart of
the stand-in (all sockets deleted, a new ``kubelet.sock``) must end with every pool registered
again and a complete device list; deleting one worker's socket re-registers that pool alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.conftest import SimNode, resource
from tests.reliability.procs import settle

pytestmark = pytest.mark.timeout(120)

POOLS = 4


@pytest.fixture
def node() -> Iterator[SimNode]:
    n = SimNode(POOLS, 2)
    try:
        n.start_supervisor()
        yield n
    finally:
        n.close()


def test_fifty_kubelet_restarts_every_pool_registers_again_each_time(node: SimNode) -> None:
    k = node.stand_in()
    assert k.wait_for(node.all_registered(generation=1), 30), node.log_text()
    for _ in range(50):
        k.restart()
        assert k.wait_for(node.all_registered(generation=k.generation), 30), (
            f"generation {k.generation}: {[(r.resource, r.generation) for r in k.registrations]}"
            f"\n{node.log_text()}"
        )
    assert k.generation == 51
    assert k.refused == []
    rows = node.rows()
    assert all(row["restarts"] == 0 for row in rows.values())  # healed without any restart


def test_deleting_one_worker_socket_re_registers_that_pool_alone(node: SimNode) -> None:
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 30), node.log_text()
    endpoints = {p: k.endpoint(resource(p)) for p in range(POOLS)}
    counts = {p: sum(r.resource == resource(p) for r in k.registrations) for p in range(POOLS)}
    victim = endpoints[0]
    assert victim is not None
    os.unlink(node.plugin_dir / victim)
    assert k.wait_for(
        lambda s: s.endpoint(resource(0)) not in (None, victim) and node.all_registered()(s), 15
    ), node.log_text()
    assert (node.plugin_dir / str(k.endpoint(resource(0)))).exists()
    for p in range(1, POOLS):
        assert k.endpoint(resource(p)) == endpoints[p]
        assert sum(r.resource == resource(p) for r in k.registrations) == counts[p]
    assert sum(r.resource == resource(0) for r in k.registrations) == counts[0] + 1


def _all_running(node: SimNode) -> bool:
    try:
        rows = node.rows()
    except Exception:  # the control socket is not there yet
        return False
    infra = {"health-monitor", "kubelet-watcher", "metrics"}
    return len(rows) == POOLS + len(infra) and all(r["state"] == "RUNNING" for r in rows.values())


def test_kubelet_started_after_the_supervisor() -> None:
    node = SimNode(POOLS, 2, kubelet=False)
    try:
        node.start_supervisor()
        # the node boots without a kubelet: every child up (each pool serving, its first
        # registration refused for want of kubelet.sock) before the kubelet appears
        assert settle(lambda: _all_running(node), 60), node.log_text()
        assert not (node.plugin_dir / "kubelet.sock").exists()
        k = node.start_kubelet()
        assert k.wait_for(node.all_registered(generation=1), 30), node.log_text()
        assert k.refused == []
    finally:
        node.close()
