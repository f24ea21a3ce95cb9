"""Files the workers write for other components (device-info for Multus and the SR-IOV CNI, CDI
specs for the container runtime) are 0644 although the supervisor runs with umask 077; its own
files stay private. Real supervisor, real workers, the kubelet stand-in."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sriovdp.simnode import demo_config, demo_node
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.integration.test_supervisor_lifecycle import Supervisor, wait_until

pytestmark = pytest.mark.timeout(120)

NET = "intel.com/sriov_net_A"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, KubeletStandIn]]:
    demo_node(tmp_path / "sys")
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "plugins").mkdir()
    # devinfo/ and cdi/ are missing: the workers create them (on a real node, /var/run is tmpfs)
    kubelet = KubeletStandIn(tmp_path / "plugins")
    yield tmp_path, kubelet
    kubelet.stop()


def test_device_info_and_cdi_specs_are_0644_in_0755_dirs_under_the_supervisors_umask(
    node: tuple[Path, KubeletStandIn],
) -> None:
    base, kubelet = node
    args: tuple[str, ...] = ("--proc-root", str(base / "proc"), "--no-metrics", "--use-cdi")
    devinfo, cdi = base / "devinfo" / "dp", base / "cdi"
    args += ("--devinfo-dir", str(devinfo), "--cdi-dir", str(cdi))
    sup = Supervisor(base, entry=None, args=args, config_text=json.dumps(demo_config()))
    try:
        # registered, and the first list of the pool allocated from has arrived
        assert kubelet.wait_for(lambda k: len(k.allocatable()) == 3 and bool(k.devices(NET)), 60), (
            sup.log_text()
        )
        wait_until(lambda: len(sorted(cdi.glob("*.json"))) == 3, 60, "3 CDI specs")
        specs = sorted(cdi.glob("*.json"))
        device = kubelet.devices(NET)[0].id
        kubelet.allocate(NET, [device])
        infos = list(devinfo.glob(f"*{device}-device.json"))
        assert len(infos) == 1
        for path in [*specs, *infos]:
            assert mode(path) == 0o644, f"{path}: {oct(mode(path))}"
        # the directories they created, parents included, let the readers in
        for path in (cdi, devinfo, devinfo.parent):
            assert mode(path) == 0o755, f"{path}: {oct(mode(path))}"
        # the supervisor's own files stay its own
        assert mode(base / "run") == 0o700
        assert mode(base / "run" / "config.json") == 0o600
    finally:
        assert sup.stop() == 0
