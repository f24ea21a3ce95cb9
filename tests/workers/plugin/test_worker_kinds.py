"""Real worker processes for the upstream device kinds, against the kubelet stand-in over real
unix sockets: an SF pool (ids are auxiliary device names, health from the parent PF's link, no
device-info file), a vDPA pool (vhost-vdpa node, vdpa device-info file) and a DDP pool on a node
where devlink cannot answer (left out, with the reason in the log)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sriovdp.simnode import upstream_node, upstream_readme_config
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.workers.plugin.conftest import Node
from tests.workers.plugin.test_worker import until

pytestmark = pytest.mark.timeout(60)

SF = "nvidia.com/bf2_sf"
VDPA = "intel.com/ct6dx_vdpa_vhost"


def listed(kubelet: KubeletStandIn, resource: str) -> bool:
    return kubelet.connected(resource) and kubelet.lists_received(resource) > 0


@pytest.fixture
def upstream(node: Node) -> Node:
    upstream_node(node.sysfs.root)
    node.write_config(upstream_readme_config())
    return node


def test_sf_pool_serves_auxiliary_devices(
    upstream: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    worker = spawn("nvidia-com_bf2_sf")
    assert kubelet.wait_for(lambda k: listed(k, SF), 30), worker.log()
    devices = kubelet.devices(SF)
    assert [(d.id, d.health, d.numa) for d in devices] == [
        ("mlx5_core.sf.0", "Healthy", (0,)), ("mlx5_core.sf.1", "Healthy", (0,)),
        ("mlx5_core.sf.3", "Healthy", (0,)),
    ]  # fmt: skip
    resp = kubelet.allocate(SF, ["mlx5_core.sf.1"])
    assert dict(resp.envs) == {
        "PCIDEVICE_NVIDIA_COM_BF2_SF": "mlx5_core.sf.1",
        "PCIDEVICE_NVIDIA_COM_BF2_SF_INFO": (
            '{"mlx5_core.sf.1":{"generic":{"deviceID":"mlx5_core.sf.1"}}}'
        ),
    }
    assert list(resp.devices) == []
    assert not upstream.devinfo_dir.exists() or list(upstream.devinfo_dir.iterdir()) == []
    assert worker.terminate() == 0


def test_sfs_follow_the_parent_pfs_link(
    upstream: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    upstream.sysfs.set_operstate("p0", "down")
    worker = spawn("nvidia-com_bf2_sf")
    assert kubelet.wait_for(lambda k: listed(k, SF), 30), worker.log()
    assert {d.health for d in kubelet.devices(SF)} == {"Unhealthy"}
    assert kubelet.allocate(SF, ["mlx5_core.sf.0"]).envs  # allocated all the same, with a warning
    assert until(lambda: "mlx5_core.sf.0 is Unhealthy (health link p0" in worker.log())


def test_vdpa_pool_gives_the_vhost_vdpa_node_and_a_vdpa_device_info_file(
    upstream: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    worker = spawn("intel-com_ct6dx_vdpa_vhost")
    assert kubelet.wait_for(lambda k: listed(k, VDPA), 30), worker.log()
    assert [d.id for d in kubelet.devices(VDPA)] == ["0000:5f:00.0", "0000:5f:00.1"]
    resp = kubelet.allocate(VDPA, ["0000:5f:00.0"])
    assert [(d.container_path, d.host_path, d.permissions) for d in resp.devices] == [
        ("/dev/vhost-vdpa-0", "/dev/vhost-vdpa-0", "mrw")
    ]
    info = json.loads(resp.envs["PCIDEVICE_INTEL_COM_CT6DX_VDPA_VHOST_INFO"])
    assert info["0000:5f:00.0"]["vdpa"] == {"mount": "/dev/vhost-vdpa-0"}
    path = upstream.devinfo_dir / "intel.com-ct6dx_vdpa_vhost-0000:5f:00.0-device.json"
    assert json.loads(path.read_text()) == {
        "type": "vdpa", "version": "1.1.0",
        "vdpa": {"parent-device": "vdpa0", "driver": "vhost", "path": "/dev/vhost-vdpa-0",
                 "pci-address": "0000:5f:00.0", "pf-pci-address": "0000:5e:00.0"},
    }  # fmt: skip
    assert worker.terminate() == 0
    assert path.exists()  # a pod holds the device: the file outlives the worker


def test_ddp_pool_where_devlink_cannot_answer(
    upstream: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    upstream.write_config({"resourceList": [{"resourceName": "gtp", "selectors": [
        {"devices": ["1889"], "ddpProfiles": ["ICE COMMS Package"]}]}]})  # fmt: skip
    worker = spawn("intel-com_gtp", "--log-level", "debug")
    assert kubelet.wait_for(lambda k: listed(k, "intel.com/gtp"), 30), worker.log()
    assert kubelet.devices("intel.com/gtp") == []
    log = worker.log()
    for vf in ("0000:1d:00.0", "0000:1d:00.3"):
        assert f"excluded {vf}: devlink cannot answer for PF 0000:1c:00.0: " in log


def test_cxi_pool_gives_the_cxi_node(upstream: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    upstream.write_config({"resourceList": [{"resourceName": "slingshot", "resourcePrefix":
        "hpe.com", "selectors": [{"vendors": ["17db"], "drivers": ["cxi_ss1"]}]}]})  # fmt: skip
    worker = spawn("hpe-com_slingshot", "--use-cdi")
    assert kubelet.wait_for(lambda k: listed(k, "hpe.com/slingshot"), 30), worker.log()
    assert [d.id for d in kubelet.devices("hpe.com/slingshot")] == ["0000:c2:00.0", "0000:c2:00.1"]
    resp = kubelet.allocate("hpe.com/slingshot", ["0000:c2:00.1"])
    assert [c.name for c in resp.cdi_devices] == ["hpe.com/net-pci=0000:c2:00.1"]
    info = json.loads(resp.envs["PCIDEVICE_HPE_COM_SLINGSHOT_INFO"])
    assert info["0000:c2:00.1"]["cxi"] == {"dev-mount": "/dev/cxi2"}
    spec = json.loads((upstream.cdi_dir / "sriov-dp_hpe-com_slingshot.json").read_text())
    nodes = {d["name"]: d["containerEdits"]["deviceNodes"] for d in spec["devices"]}
    assert nodes["0000:c2:00.1"] == [
        {"path": "/dev/cxi2", "hostPath": "/dev/cxi2", "permissions": "rw"}
    ]
    assert worker.terminate() == 0
