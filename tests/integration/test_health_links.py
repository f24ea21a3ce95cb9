"""End to end: real link events in a netns drive device health at the kubelet stand-in (root).

The supervisor runs inside a fresh network namespace holding a veth per fake PF netdev; toggling
a veth with iproute2 must turn exactly that PF's VFs Unhealthy in ListAndWatch, and back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.harness.netns import NetNS
from tests.integration.conftest import SimNode, pf_netdev, resource

pytestmark = [pytest.mark.timeout(90), pytest.mark.root]


def _converged(node: SimNode, ns: NetNS) -> bool:
    """Every pool's list at the stand-in matches the kernel's view of its PF."""
    kernel = ns.healthy()
    k = node.stand_in()
    for p in range(node.pfs):
        want = "Healthy" if kernel[pf_netdev(p)] else "Unhealthy"
        devices = {d.id: d.health for d in k.devices(resource(p))}
        if set(devices) != node.vfs(p) or any(h != want for h in devices.values()):
            return False
    return True


def _kernel_settles(ns: NetNS, want: dict[str, bool]) -> bool:
    """The kernel's operstate follows admin changes through linkwatch, up to a second later."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        healthy = ns.healthy()
        if all(healthy[name] == value for name, value in want.items()):
            return True
        time.sleep(0.05)
    return False


def _flap_commands(pfs: int, count: int) -> list[str]:
    out = []
    for i in range(count):
        p = i % pfs
        out.append(f"link set {pf_netdev(p)} {'down' if (i // pfs) % 2 == 0 else 'up'}")
    return out


def test_pf_down_makes_only_its_vfs_unhealthy_and_up_heals(
    linked_node: tuple[SimNode, NetNS],
) -> None:
    node, ns = linked_node
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 30), node.log_text()
    assert k.wait_for(node.pool_is(0, True), 30)
    lists_before = k.lists_received(resource(1))

    ns.ip("link", "set", pf_netdev(0), "down")
    assert k.wait_for(node.pool_is(0, False), 30), node.log_text()
    assert node.pool_is(1, True)(k)
    assert k.lists_received(resource(1)) == lists_before  # the other pool was not even re-sent

    ns.ip("link", "set", pf_netdev(0), "up")
    assert k.wait_for(node.pool_is(0, True), 30), node.log_text()

    # carrier loss (the peer goes down) is Unhealthy too, though the PF stays admin up
    ns.ip("link", "set", f"{pf_netdev(1)}p", "down")
    assert k.wait_for(node.pool_is(1, False), 30), node.log_text()
    assert node.pool_is(0, True)(k)
    ns.ip("link", "set", f"{pf_netdev(1)}p", "up")
    assert k.wait_for(node.pool_is(1, True), 30), node.log_text()


def test_1000_toggles_end_in_the_kernel_state(linked_node: tuple[SimNode, NetNS]) -> None:
    node, ns = linked_node
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 30), node.log_text()
    # the pattern leaves both PFs up; then PF 0 goes down
    ns.batch([*_flap_commands(node.pfs, 1000), f"link set {pf_netdev(0)} down"])
    assert _kernel_settles(ns, {pf_netdev(0): False, pf_netdev(1): True})
    assert k.wait_for(lambda _k: _converged(node, ns), 20), node.log_text()


@pytest.mark.parametrize("victim", ["health-monitor", "intel-com_pool0"])
def test_killed_mid_flapping_converges(linked_node: tuple[SimNode, NetNS], victim: str) -> None:
    node, ns = linked_node
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 30), node.log_text()
    pid = node.pid_of(victim)
    flapper = subprocess.Popen(
        ["ip", "-n", ns.name, "-batch", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert flapper.stdin is not None
    commands = _flap_commands(node.pfs, 1200)
    for command in commands[:600]:
        flapper.stdin.write(f"{command}\n".encode())
    flapper.stdin.flush()
    os.kill(pid, signal.SIGKILL)
    for command in commands[600:]:
        flapper.stdin.write(f"{command}\n".encode())
    flapper.stdin.write(f"link set {pf_netdev(1)} down\n".encode())
    flapper.stdin.close()
    assert flapper.wait(30) == 0
    assert _kernel_settles(ns, {pf_netdev(1): False})
    assert k.wait_for(lambda _k: _converged(node, ns), 30), node.log_text()
    # and the victim was restarted by the supervisor
    assert node.pid_of(victim) != pid
