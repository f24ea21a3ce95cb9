"""A real plugin worker (``python -m sriovdp.workers plugin``) on a fake node: a ``sriovMode``
pool on a PF without VFs takes them when they are created (no restart), and device nodes the host
lacks are logged once per pool."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sriovdp.simnode.kubelet import KubeletStandIn
from tests.workers.plugin.conftest import Node

pytestmark = pytest.mark.timeout(120)

RESOURCE = "intel.com/novfs"


def listed(kubelet: KubeletStandIn, resource: str, count: int) -> bool:
    ok = kubelet.connected(resource) and kubelet.lists_received(resource) > 0
    return ok and len(kubelet.devices(resource)) == count


def test_sriov_mode_pool_takes_vfs_created_later_without_a_restart(
    node: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    node.sysfs.add_pf("0000:06:00.0", netdev="late0", num_vfs=0, total_vfs=8)
    node.write_config(
        {"resourceList": [{"resourceName": "novfs", "rootDevices": ["06:00.0"], "sriovMode": True}]}
    )
    worker = spawn("intel-com_novfs", "--rescan-interval", "0.2")
    assert kubelet.wait_for(lambda k: listed(k, RESOURCE, 0), 60), worker.log()
    assert (
        "pool intel.com/novfs has no device: 0000:06:00.0: sriovMode true: PF with no VFs"
        in worker.log()
    )
    vfs = node.sysfs.set_num_vfs("0000:06:00.0", 3)
    assert kubelet.wait_for(lambda k: listed(k, RESOURCE, 3), 60), worker.log()
    assert sorted(d.id for d in kubelet.devices(RESOURCE)) == vfs
    assert worker.proc.poll() is None
    assert len(kubelet.registrations) == 1  # the same worker and registration


def test_a_pool_naming_devices_not_on_the_node_says_so(
    node: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    node.sysfs.add_pf("0000:06:00.0", netdev="pf0", num_vfs=2, total_vfs=8)
    node.write_config({"resourceList": [
        {"resourceName": "gone", "selectors": {"pciAddresses": ["0000:99:00.0"]}},
    ]})  # fmt: skip
    worker = spawn("intel-com_gone")
    assert kubelet.wait_for(lambda k: listed(k, "intel.com/gone", 0), 60), worker.log()
    assert "pool intel.com/gone has no device: not found on this node: 0000:99:00.0" in worker.log()


def test_missing_device_nodes_are_logged_once_per_pool(
    node: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    node.sysfs.add_pf("0000:06:00.0", netdev="pf0", num_vfs=2, total_vfs=8, vf_driver="vfio-pci")
    (node.dev_root / "dev/vfio").mkdir(parents=True)
    (node.dev_root / "dev/vfio/vfio").touch()
    node.write_config({"resourceList": [
        {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"], "needVhostNet": True}},
    ]})  # fmt: skip
    worker = spawn("intel-com_dpdk", "--rescan-interval", "0.2")
    assert kubelet.wait_for(lambda k: listed(k, "intel.com/dpdk", 2), 60), worker.log()
    node.sysfs.set_num_vfs("0000:06:00.0", 4, vf_driver="vfio-pci")  # a rescan, a new table
    assert kubelet.wait_for(lambda k: listed(k, "intel.com/dpdk", 4), 60), worker.log()
    first = sorted(d.id for d in kubelet.devices("intel.com/dpdk"))[0]
    resp = kubelet.allocate("intel.com/dpdk", [first])
    paths = [d.host_path for d in resp.devices]
    assert "/dev/vhost-net" not in paths and "/dev/net/tun" not in paths  # not on the host
    assert paths[0] == "/dev/vfio/vfio"
    info = json.loads(resp.envs["PCIDEVICE_INTEL_COM_DPDK_INFO"])
    assert next(iter(info.values()))["vhost"] == {}
    worker.terminate()
    log = worker.log()
    for path in ("/dev/vhost-net", "/dev/net/tun"):
        lines = [line for line in log.splitlines() if f"device node {path} does not exist" in line]
        assert len(lines) == 1, log
        assert str(node.dev_root / path.lstrip("/")) in lines[0]
        assert "intel.com/dpdk" in lines[0]
    # the IOMMU group nodes are missing too; the node that exists is not reported
    assert "device node /dev/vfio/vfio does not exist" not in log
    assert log.count("does not exist on the host") >= 3
