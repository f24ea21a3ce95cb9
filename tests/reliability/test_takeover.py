"""The supervisor SIGKILLed and started again on the same run dir; device-info files after a
worker crash."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sriovdp.shared.bus import RunDir
from tests.integration.conftest import SimNode, resource
from tests.reliability.chaos import pool_child
from tests.reliability.procs import alive, descendants, settle, unix_sockets_in

pytestmark = pytest.mark.timeout(90)

POOLS = 3


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_ctime_ns


@pytest.fixture
def node() -> Iterator[SimNode]:
    n = SimNode(POOLS, 4)
    try:
        n.start_supervisor()
        yield n
    finally:
        n.close()


def test_supervisor_sigkilled_then_started_again_takes_over(node: SimNode) -> None:
    assert node.proc is not None
    k = node.stand_in()
    assert k.wait_for(node.all_registered(generation=1), 60), node.log_text()
    first = node.proc
    tree = descendants(first.pid)
    rd = RunDir(node.run_dir)
    sockets_before = {p: _identity(p) for p in (rd.bus_in, rd.bus_out, rd.control)}
    registrations = len(k.registrations)

    first.send_signal(signal.SIGKILL)
    first.wait(20)
    # children never outlive it (PDEATHSIG); its run-dir sockets and lock file stay behind
    # (a bound for a loaded machine: the plugin workers stop gracefully on their SIGTERM)
    assert settle(lambda: not [pid for pid in tree if alive(pid)], 30), [
        pid for pid in tree if alive(pid)
    ]
    assert all(p.exists() for p in sockets_before), "stale sockets expected after SIGKILL"
    assert rd.lock.exists()

    node.start_supervisor()
    assert node.proc is not first
    assert k.wait_for(
        lambda s: len(s.registrations) >= registrations + POOLS and node.all_registered()(s), 60
    ), node.log_text()
    # the control socket answers: the new supervisor owns the run dir; every child comes up
    assert settle(lambda: all(r["state"] == "RUNNING" for r in node.rows().values()), 30)
    rows = node.rows()
    assert not {r["pid"] for r in rows.values()} & tree
    # the stale sockets were replaced by fresh ones
    assert all(_identity(p) != ident for p, ident in sockets_before.items())
    assert unix_sockets_in(node.run_dir) == {"bus-in.sock", "bus-out.sock", "control.sock"}
    # one plugin socket per pool plus kubelet.sock: the old workers removed theirs
    assert len(unix_sockets_in(node.plugin_dir)) == POOLS + 1
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(20) == 0


def test_device_info_lives_as_long_as_a_pod_holds_the_device(node: SimNode) -> None:
    """A crash of the worker and a graceful stop of the whole plugin (an upgrade) keep the file
    of a device the kubelet's checkpoint lists; once the pod is gone, the next start removes it."""
    assert node.proc is not None
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 60), node.log_text()
    vf = sorted(node.vfs(0))[0]
    k.allocate(resource(0), [vf], pod_uid="pod-1")
    devinfo = node.base / "devinfo"
    (path,) = devinfo.glob("*-device.json")
    old = node.pid_of(pool_child(0))
    registrations = len(k.registrations)
    os.kill(old, signal.SIGKILL)
    assert k.wait_for(
        lambda s: len(s.registrations) > registrations and node.all_registered()(s), 30
    ), node.log_text()
    assert path.exists()  # kept across the crash, and by the new worker's start
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(20) == 0, node.log_text()
    assert list(devinfo.iterdir()) == [path]  # kept across the stop: the pod still runs

    k.delete_pod("pod-1")
    then = time.time() - 3600  # the pod ran for an hour
    os.utime(path, (then, then))
    node.start_supervisor()
    assert k.wait_for(node.all_registered(), 60), node.log_text()
    assert settle(lambda: not path.exists(), 30), node.log_text()
