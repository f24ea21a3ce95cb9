"""Chaos: 8 pools allocating continuously while children are SIGKILLed and the kubelet restarts.

See :mod:`tests.reliability.chaos` for how failures are judged. Duration: ``SRIOV_DP_CHAOS_SECONDS``
(default 20; ``bench/bench_chaos.py`` runs 60). After the run: every pool registered with its
complete list, no leaked process, socket, supervisor fd or device-info file.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import SimNode, resource
from tests.reliability.chaos import Chaos
from tests.reliability.procs import (
    alive,
    descendants,
    describe,
    fd_count,
    settle,
    unix_sockets_in,
    zombie,
)

SECONDS = float(os.environ.get("SRIOV_DP_CHAOS_SECONDS", "20"))
POOLS = 8
VFS = 4
RUN_SOCKETS = {"bus-in.sock", "bus-out.sock", "control.sock"}

pytestmark = pytest.mark.timeout(SECONDS + 120)


@pytest.fixture
def node() -> Iterator[SimNode]:
    n = SimNode(POOLS, VFS)
    try:
        n.start_supervisor()
        yield n
    finally:
        n.close()


def steady(node: SimNode) -> None:
    """Every pool registered with its full list and every child RUNNING."""
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 60), node.log_text()
    assert settle(lambda: all(r["state"] == "RUNNING" for r in node.rows().values()), 30), (
        node.rows()
    )


def plugin_sockets(node: SimNode) -> set[str]:
    k = node.stand_in()
    return {"kubelet.sock"} | {str(k.endpoint(resource(p))) for p in range(node.pfs)}


def test_chaos_other_pools_never_fail_and_nothing_leaks(node: SimNode) -> None:
    assert node.proc is not None
    sup = node.proc.pid
    steady(node)
    time.sleep(1.0)  # let start-up connections settle before counting fds
    fds_before = fd_count(sup)
    tree_before = descendants(sup)
    before = describe(tree_before)

    chaos = Chaos(node, SECONDS, seed=int(os.environ.get("SRIOV_DP_CHAOS_SEED", "0")) or None)
    report = chaos.run()
    print("\n" + report.table())

    # every pool comes back with its complete list, every child RUNNING
    steady(node)
    for p in report.pools:
        assert p.attempted > 0 and p.ok > 0, p.row()
    assert report.unexpected == 0, "\n".join(
        [f"{p.resource}: {e}" for p in report.pools for e in p.unexpected_errors]
        + [f"t={t:.3f} {e}" for t, e in report.events]
        + [
            f"t={g.time:.3f} registered {g.resource} gen {g.generation}"
            for g in node.stand_in().registrations
            if any(g.resource == p.resource and p.unexpected_errors for p in report.pools)
        ]
        + [node.log_text()]
    )
    kills = [e for _, e in report.events if e.startswith("kill")]
    assert kills, report.events  # the run did something

    # no leaked process: below the supervisor are exactly the children status lists and the
    # zygote (if one runs: a killed zygote is replaced at the next spawn, not before), no
    # zombie, every killed pid gone
    def expected() -> set[int]:
        status = node.status()
        zygote = status["supervisor"]["zygote"]["pid"]
        return {r["pid"] for r in status["children"]} | ({zygote} if zygote else set())

    assert settle(lambda: descendants(sup) == expected(), 15), "\n".join(
        ["before:", *before, "after:", *describe(descendants(sup)), f"expected: {expected()}"]
        + [f"t={t:.3f} {e}" for t, e in report.events[-10:]]
        + [node.log_text()]
    )
    assert len(descendants(sup)) <= len(tree_before)
    assert not [pid for pid in descendants(sup) if zombie(pid)]
    assert not [pid for _, _, pid in chaos.kills if alive(pid)]
    # no leaked socket: the kubelet's and one per pool in the plugin dir, three in the run dir
    assert settle(lambda: unix_sockets_in(node.plugin_dir) == plugin_sockets(node), 10), (
        unix_sockets_in(node.plugin_dir),
        plugin_sockets(node),
    )
    assert unix_sockets_in(node.run_dir) == RUN_SOCKETS
    # no leaked fd in the supervisor (peers' connections close when they die)
    assert settle(lambda: fd_count(sup) <= fds_before, 15), (fds_before, fd_count(sup))

    # graceful stop: nothing left behind but the device-info of devices pods hold
    seen = report.seen_pids | descendants(sup)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(20) == 0, node.log_text()
    assert settle(lambda: not [pid for pid in seen if alive(pid)], 30), [
        pid for pid in seen if alive(pid)
    ]
    assert unix_sockets_in(node.plugin_dir) == {"kubelet.sock"}
    assert not unix_sockets_in(node.run_dir)
    devinfo = node.base / "devinfo"
    left = sorted(p.name for p in devinfo.iterdir()) if devinfo.exists() else []
    # the pods' devices are all there; the rest were allocated within the last minute (kept:
    # the kubelet may not have recorded them yet)
    k = node.stand_in()
    held = {
        f"{resource(p).replace('/', '-')}-{i}-device.json"
        for p in range(node.pfs)
        for i in k.held(resource(p))
    }
    assert held and held <= set(left), (held, left)
    assert all(name.endswith("-device.json") for name in left), left
