"""``sriov-supervisor status --check live|ready``, the DaemonSet's exec probes, against a real
supervisor on a simulated node: a kubelet that is not there yet makes the node not ready but
never not live; a stopped supervisor is not live."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.conftest import REPO, SimNode
from tests.integration.test_supervisor_lifecycle import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def node() -> Iterator[SimNode]:
    n = SimNode(2, 4, kubelet=False)
    try:
        n.start_supervisor()
        yield n
    finally:
        n.close()


def check(node: SimNode, what: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sriovdp", "status", "--check", what]
    argv += ["--run-dir", str(node.run_dir), "--timeout", "10"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_live_without_a_kubelet_ready_only_once_registered(node: SimNode) -> None:
    wait_until(lambda: check(node, "live").returncode == 0, what="live")
    live = check(node, "live")
    assert live.stdout.startswith("live: supervisor pid ")
    ready = check(node, "ready")
    assert ready.returncode == 3
    assert ready.stdout.startswith("not ready: ")
    assert "is not registered with the kubelet" in ready.stdout or "is STARTING" in ready.stdout
    assert len(ready.stdout.strip().splitlines()) == 1

    node.start_kubelet()
    wait_until(lambda: check(node, "ready").returncode == 0, what="ready")
    assert check(node, "ready").stdout.strip() == "ready: 2 pools registered"

    node.stand_in().stop()  # the kubelet goes away: no pod restart wanted, so still live
    node.kubelet = None
    assert check(node, "live").returncode == 0

    assert node.proc is not None
    node.proc.terminate()
    assert node.proc.wait(30) == 0
    gone = check(node, "live")
    assert gone.returncode == 4
    assert "unreachable" in gone.stderr
