"""A simulated node for end-to-end tests and benchmarks (test process).

:class:`SimNode` puts together a fake sysfs tree (``scale_node``: PF ``p`` has netdev ``scl<p>``),
a config with one pool per PF, the kubelet stand-in serving in the plugin directory, and the real
``sriov-supervisor run`` as a subprocess; with ``netns`` set the supervisor runs inside that
network namespace (``ip netns exec``), where a veth pair per PF netdev exists, so the health
monitor sees the links the fake PFs name. The benchmarks in ``bench/`` use it too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sriovdp.simnode import scale_node, vf_address
from sriovdp.simnode.kubelet import KubeletStandIn
from sriovdp.supervisor.client import ControlClient
from tests.harness.netns import CAN_CREATE, SKIP_REASON, NetNS

REPO = Path(__file__).resolve().parents[2]
PREFIX = "intel.com"


def pf_address(p: int) -> str:
    return f"0000:01:{p // 8:02x}.{p % 8}"


def pf_netdev(p: int) -> str:
    return f"scl{p}"


def resource(p: int) -> str:
    return f"{PREFIX}/pool{p}"


def pool_config(pfs: int) -> dict[str, Any]:
    """One pool per PF: ``pool<p>`` holds the VFs of ``scl<p>``."""
    return {
        "resourceList": [
            {"resourceName": f"pool{p}", "selectors": {"pfNames": [pf_netdev(p)]}}
            for p in range(pfs)
        ]
    }


class SimNode:
    """Fake node + kubelet stand-in + supervisor; ``close()`` stops and removes everything."""

    def __init__(
        self,
        pfs: int,
        vfs_per_pf: int,
        netns: str | None = None,
        kubelet: bool = True,
        spawn_mode: str = "zygote",
    ) -> None:
        self.pfs = pfs
        self.vfs_per_pf = vfs_per_pf
        self.netns = netns
        self.spawn_mode = spawn_mode
        # short: ipc:// and unix socket paths must stay under 107 bytes
        self.base = Path(tempfile.mkdtemp(prefix="sdpe-", dir="/tmp"))
        self.sysfs = scale_node(self.base / "sys", pfs, vfs_per_pf)
        (self.base / "proc" / "net").mkdir(parents=True)
        self.plugin_dir = self.base / "plugins"
        self.plugin_dir.mkdir()
        self.run_dir = self.base / "run"
        self.config = self.base / "config.json"
        self.config.write_text(json.dumps(pool_config(pfs)))
        self.log = self.base / "supervisor.log"
        self.kubelet: KubeletStandIn | None = KubeletStandIn(self.plugin_dir) if kubelet else None
        self.proc: subprocess.Popen[bytes] | None = None
        #: loopback and any free port: tests never listen on the node's addresses
        self.metrics_address = "127.0.0.1:0"

    # -- processes ---------------------------------------------------------------------------------

    def start_supervisor(self) -> None:
        argv = [sys.executable, "-m", "sriovdp", "run", "--config-file", str(self.config)]
        argv += ["--run-dir", str(self.run_dir), "--plugin-dir", str(self.plugin_dir)]
        argv += ["--sysfs-root", str(self.base / "sys"), "--proc-root", str(self.base / "proc")]
        argv += ["--devinfo-dir", str(self.base / "devinfo"), "--cdi-dir", str(self.base / "cdi")]
        argv += ["--spawn-mode", self.spawn_mode]
        argv += ["--metrics-address", self.metrics_address]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=REPO)

    def start_kubelet(self) -> KubeletStandIn:
        self.kubelet = KubeletStandIn(self.plugin_dir)
        return self.kubelet

    def stand_in(self) -> KubeletStandIn:
        assert self.kubelet is not None, "the kubelet stand-in is not running"
        return self.kubelet

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def status(self) -> dict[str, Any]:
        with ControlClient(self.run_dir, timeout=10.0) as client:
            status: dict[str, Any] = client.request("status")
        return status

    def rows(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.status()["children"]}

    def metrics_url(self) -> str | None:
        """``http://HOST:PORT`` of the metrics child once it listens, else None."""
        with ControlClient(self.run_dir, timeout=10.0) as client:
            metrics = client.request("status")["supervisor"].get("metrics") or {}
        return f"http://{metrics['bound']}" if metrics.get("listening") else None

    def pid_of(self, child: str) -> int:
        pid = self.rows()[child]["pid"]
        assert isinstance(pid, int)
        return pid

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.kubelet is not None:
            self.kubelet.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- what the kubelet sees ---------------------------------------------------------------------

    def vfs(self, p: int) -> set[str]:
        return {vf_address(pf_address(p), i) for i in range(self.vfs_per_pf)}

    def health(self, p: int) -> dict[str, str]:
        """Device id -> health in the stand-in's latest ListAndWatch list of pool p."""
        return {d.id: d.health for d in self.stand_in().devices(resource(p))}

    def pool_is(self, p: int, healthy: bool) -> Callable[[KubeletStandIn], bool]:
        want = "Healthy" if healthy else "Unhealthy"
        vfs = self.vfs(p)

        def check(k: KubeletStandIn) -> bool:
            devices = {d.id: d.health for d in k.devices(resource(p))}
            return set(devices) == vfs and all(h == want for h in devices.values())

        return check

    def all_registered(self, generation: int | None = None) -> Callable[[KubeletStandIn], bool]:
        """Every pool connected with its complete device list (registered in ``generation``)."""

        def check(k: KubeletStandIn) -> bool:
            for p in range(self.pfs):
                r = resource(p)
                if not k.connected(r) or {d.id for d in k.devices(r)} != self.vfs(p):
                    return False
                if generation is not None:
                    regs = [g.generation for g in k.registrations if g.resource == r]
                    if not regs or regs[-1] != generation:
                        return False
            return True

        return check


def create_netns(pfs: int) -> NetNS:
    name = f"sdpe-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
    ns = NetNS.create(name)
    commands = []
    for p in range(pfs):
        commands.append(f"link add {pf_netdev(p)} type veth peer name {pf_netdev(p)}p")
        commands.append(f"link set {pf_netdev(p)} up")
        commands.append(f"link set {pf_netdev(p)}p up")
    ns.batch(commands)
    return ns


def delete_netns(ns: NetNS) -> None:
    ns.delete()


def needs_root() -> None:
    if not CAN_CREATE:
        pytest.skip(SKIP_REASON)


@pytest.fixture
def linked_node(request: pytest.FixtureRequest) -> Iterator[tuple[SimNode, NetNS]]:
    """Two PFs with 4 VFs each, veths in a fresh netns, the supervisor running inside it."""
    needs_root()
    pfs = getattr(request, "param", 2)
    ns = create_netns(pfs)
    node = SimNode(pfs, 4, netns=ns.name)
    try:
        node.start_supervisor()
        yield node, ns
    finally:
        node.close()
        delete_netns(ns)
