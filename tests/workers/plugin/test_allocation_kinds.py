"""Allocate answers for every pool of the upstream README's config, and for SFs with RDMA, vDPA
virtio, pKeys, CXI and additionalInfo, on the simulated node with a device of every kind:
env, ``_INFO``, device specs, device-info document and CDI, field by field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sriovdp.shared import pools
from sriovdp.shared.config import parse_config
from sriovdp.shared.model import PoolDiscovery
from sriovdp.simnode import upstream_node, upstream_readme_config
from sriovdp.workers.plugin.allocation import AllocationTable
from sriovdp.workers.plugin.cdi import spec_document
from sriovdp.workers.plugin.devinfo import DevInfoWriter
from sriovdp.workers.plugin.drivers import DriverContext

RW = "rw"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("node")
    upstream_node(root / "sys")
    (root / "dev/dev/net").mkdir(parents=True)
    (root / "dev/dev/vhost-net").touch()
    (root / "dev/dev/net/tun").touch()
    return root


def discovered(node: Path, doc: dict[str, Any]) -> dict[str, PoolDiscovery]:
    cfg = parse_config(json.dumps(doc), "c.json", "intel.com")
    return {r.pool.resource: r for r in pools.discover(cfg, node / "sys", node / "proc")}


@pytest.fixture(scope="module")
def readme(node: Path) -> dict[str, PoolDiscovery]:
    return discovered(node, upstream_readme_config())


def table(node: Path, found: PoolDiscovery, cdi: bool = False) -> AllocationTable:
    return AllocationTable(found.pool, found.devices, DriverContext(node / "dev"), use_cdi=cdi)


def allocate(t: AllocationTable, ids: list[str]) -> Any:
    return t.response(t.validate(ids))


def specs(resp: Any) -> list[tuple[str, str, str]]:
    return [(d.container_path, d.host_path, d.permissions) for d in resp.devices]


def devinfo(t: AllocationTable, device_id: str) -> Any:
    body = t.prepared[device_id].devinfo_body
    return None if body is None else json.loads(body)


def test_intel_sriov_netdevice(node: Path, readme: dict[str, PoolDiscovery]) -> None:
    t = table(node, readme["intel.com/intel_sriov_netdevice"])
    resp = allocate(t, ["0000:1b:00.1", "0000:19:00.0"])
    env = "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE"
    assert dict(resp.envs) == {
        env: "0000:1b:00.1,0000:19:00.0",
        env + "_INFO": '{"0000:1b:00.1":{"generic":{"deviceID":"0000:1b:00.1"}},'
        '"0000:19:00.0":{"generic":{"deviceID":"0000:19:00.0"}}}',
    }
    assert specs(resp) == []
    assert devinfo(t, "0000:1b:00.1") == {
        "type": "pci", "version": "1.1.0",
        "pci": {"pci-address": "0000:1b:00.1", "pf-pci-address": "0000:1a:00.0"},
    }  # fmt: skip
    assert t.prepared["0000:1b:00.1"].devinfo_name == (
        "intel.com-intel_sriov_netdevice-0000:1b:00.1-device.json"
    )


def test_intel_sriov_dpdk_with_vhost_net(node: Path, readme: dict[str, PoolDiscovery]) -> None:
    t = table(node, readme["intel.com/intel_sriov_dpdk"])
    resp = allocate(t, ["0000:19:00.4", "0000:1b:00.2"])
    groups = {d.id: d.function.iommu_group for d in readme["intel.com/intel_sriov_dpdk"].devices}
    g1, g2 = groups["0000:19:00.4"], groups["0000:1b:00.2"]
    assert specs(resp) == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", RW), (f"/dev/vfio/{g1}", f"/dev/vfio/{g1}", RW),
        ("/dev/vhost-net", "/dev/vhost-net", RW), ("/dev/net/tun", "/dev/net/tun", RW),
        (f"/dev/vfio/{g2}", f"/dev/vfio/{g2}", RW),
    ]  # fmt: skip
    info = json.loads(resp.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK_INFO"])
    assert info["0000:1b:00.2"] == {
        "generic": {"deviceID": "0000:1b:00.2"},
        "vfio": {"mount": "/dev/vfio/vfio", "dev-mount": f"/dev/vfio/{g2}"},
        "vhost": {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"},
    }
    assert devinfo(t, "0000:1b:00.2")["pci"] == {
        "pci-address": "0000:1b:00.2", "pf-pci-address": "0000:1a:00.0",
        "vhost-net": "/dev/vhost-net",
    }  # fmt: skip


def test_infiniband_rdma_netdevs(node: Path, readme: dict[str, PoolDiscovery]) -> None:
    found = readme["intel.com/infiniband_rdma_netdevs"]
    t = table(node, found)
    chars = {d.id: d.function.rdma_char_devices for d in found.devices}
    resp = allocate(t, ["0000:3c:00.0", "0000:3c:00.1"])
    first, second = chars["0000:3c:00.0"], chars["0000:3c:00.1"]
    assert [s[1] for s in specs(resp)] == [
        *first,
        "/dev/infiniband/rdma_cm",
        *second,  # rdma_cm once for the request
    ]
    assert all(s[0] == s[1] and s[2] == RW for s in specs(resp))
    info = json.loads(resp.envs["PCIDEVICE_INTEL_COM_INFINIBAND_RDMA_NETDEVS_INFO"])
    n = first[-1].removeprefix("/dev/infiniband/uverbs")
    assert info["0000:3c:00.0"] == {
        "generic": {"deviceID": "0000:3c:00.0"},
        "rdma": {
            "issm": f"/dev/infiniband/issm{n}", "umad": f"/dev/infiniband/umad{n}",
            "uverbs": f"/dev/infiniband/uverbs{n}", "rdma_cm": "/dev/infiniband/rdma_cm",
            "rdma_dev": "ibp59s0f0v0_ib",
        },
    }  # fmt: skip
    assert devinfo(t, "0000:3c:00.0")["pci"] == {
        "pci-address": "0000:3c:00.0", "pf-pci-address": "0000:3b:00.0",
        "rdma-device": "ibp59s0f0v0_ib",
    }  # fmt: skip


def test_ct6dx_vdpa_vhost(node: Path, readme: dict[str, PoolDiscovery]) -> None:
    t = table(node, readme["intel.com/ct6dx_vdpa_vhost"], cdi=True)
    resp = allocate(t, ["0000:5f:00.1"])
    assert json.loads(resp.envs["PCIDEVICE_INTEL_COM_CT6DX_VDPA_VHOST_INFO"]) == {
        "0000:5f:00.1": {"generic": {"deviceID": "0000:5f:00.1"},
                         "vdpa": {"mount": "/dev/vhost-vdpa-1"}},
    }  # fmt: skip
    assert [c.name for c in resp.cdi_devices] == ["intel.com/net-pci=0000:5f:00.1"]
    assert devinfo(t, "0000:5f:00.1") == {
        "type": "vdpa", "version": "1.1.0",
        "vdpa": {"parent-device": "vdpa1", "driver": "vhost", "path": "/dev/vhost-vdpa-1",
                 "pci-address": "0000:5f:00.1", "pf-pci-address": "0000:5e:00.0"},
    }  # fmt: skip
    cdi = {d["name"]: d["containerEdits"] for d in spec_document(t)["devices"]}
    assert cdi["0000:5f:00.1"]["deviceNodes"] == [
        {"path": "/dev/vhost-vdpa-1", "hostPath": "/dev/vhost-vdpa-1", "permissions": "mrw"}
    ]
    plain = table(node, readme["intel.com/ct6dx_vdpa_vhost"])
    assert specs(allocate(plain, ["0000:5f:00.1"])) == [
        ("/dev/vhost-vdpa-1", "/dev/vhost-vdpa-1", "mrw")
    ]


def test_intel_fpga(node: Path, readme: dict[str, PoolDiscovery]) -> None:
    found = readme["intel.com/intel_fpga"]
    t = table(node, found)
    group = found.devices[1].function.iommu_group
    resp = allocate(t, ["0000:b0:00.1"])
    assert specs(resp) == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", RW), (f"/dev/vfio/{group}", f"/dev/vfio/{group}", RW),
    ]  # fmt: skip
    assert devinfo(t, "0000:b0:00.1") == {
        "type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:b0:00.1"},
    }  # fmt: skip


def test_bf2_sf(node: Path, readme: dict[str, PoolDiscovery], tmp_path: Path) -> None:
    t = table(node, readme["nvidia.com/bf2_sf"], cdi=True)
    resp = allocate(t, ["mlx5_core.sf.3", "mlx5_core.sf.0"])
    assert dict(resp.envs) == {
        "PCIDEVICE_NVIDIA_COM_BF2_SF": "mlx5_core.sf.3,mlx5_core.sf.0",
        "PCIDEVICE_NVIDIA_COM_BF2_SF_INFO": '{"mlx5_core.sf.3":{"generic":{"deviceID":'
        '"mlx5_core.sf.3"}},"mlx5_core.sf.0":{"generic":{"deviceID":"mlx5_core.sf.0"}}}',
    }
    assert [c.name for c in resp.cdi_devices] == [
        "nvidia.com/net-sf=mlx5_core.sf.3", "nvidia.com/net-sf=mlx5_core.sf.0",
    ]  # fmt: skip
    assert resp.annotations["cdi.k8s.io/nvidia.com_bf2_sf"] == (
        "nvidia.com/net-sf=mlx5_core.sf.3,nvidia.com/net-sf=mlx5_core.sf.0"
    )
    doc = spec_document(t)
    assert doc["kind"] == "nvidia.com/net-sf"
    assert [d["name"] for d in doc["devices"]] == [
        "mlx5_core.sf.0", "mlx5_core.sf.1", "mlx5_core.sf.3",
    ]  # fmt: skip
    # no device-info document for an SF (the spec has no type for it), and none is written
    assert devinfo(t, "mlx5_core.sf.3") is None
    writer = DevInfoWriter(tmp_path / "devinfo")
    assert writer.write(t.validate(["mlx5_core.sf.3"])) == []
    assert writer.written() == [] and not (tmp_path / "devinfo").exists()
    plain = table(node, readme["nvidia.com/bf2_sf"])
    assert specs(allocate(plain, ["mlx5_core.sf.0"])) == []


def test_brcm_sriov_bnxt(node: Path, readme: dict[str, PoolDiscovery]) -> None:
    t = table(node, readme["broadcom.com/brcm_sriov_bnxt"])
    resp = allocate(t, ["0000:d8:00.0"])
    assert dict(resp.envs) == {
        "PCIDEVICE_BROADCOM_COM_BRCM_SRIOV_BNXT": "0000:d8:00.0",
        "PCIDEVICE_BROADCOM_COM_BRCM_SRIOV_BNXT_INFO": (
            '{"0000:d8:00.0":{"generic":{"deviceID":"0000:d8:00.0"}}}'
        ),
    }
    assert specs(resp) == []
    assert devinfo(t, "0000:d8:00.0") == {
        "type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:d8:00.0"},
    }  # fmt: skip


def test_pools_the_readme_leaves_empty_have_nothing_to_allocate(
    readme: dict[str, PoolDiscovery],
) -> None:
    """mlx5_ib binds no PCI function; the two pools after intel_sriov_netdevice that select the
    same VFs find them claimed (first pool wins). Their Allocate answers are those of any
    empty pool: every id is unknown."""
    for resource in ("mellanox.com/mlnx_sriov_rdma", "intel.com/old_selectors_syntax_example",
                     "intel.com/intel_sriov_netdevice_additional_env"):  # fmt: skip
        assert readme[resource].devices == ()


EXTENDED = {"resourceList": [
    {"resourceName": "sf_rdma", "resourcePrefix": "nvidia.com", "deviceType": "auxNetDevice",
     "selectors": [{"pfNames": ["p1"], "isRdma": True}],
     "additionalInfo": {"*": {"token": "t"}, "mlx5_core.sf.5": {"site": "s"}}},
    {"resourceName": "vdpa_virtio", "selectors": [{"devices": ["101e"], "vdpaType": "virtio"}]},
    {"resourceName": "ib_8001",
     "selectors": [{"linkTypes": ["infiniband"], "isRdma": True, "pKeys": ["0x8001"]}]},
    {"resourceName": "slingshot", "resourcePrefix": "hpe.com",
     "selectors": [{"vendors": ["17db"], "drivers": ["cxi_ss1"]}],
     "additionalInfo": {"0000:c2:00.1": {"fabric": "a"}}},
]}  # fmt: skip


@pytest.fixture(scope="module")
def extended(node: Path) -> dict[str, PoolDiscovery]:
    return discovered(node, EXTENDED)


def test_sf_with_rdma_and_additional_info(node: Path, extended: dict[str, PoolDiscovery]) -> None:
    found = extended["nvidia.com/sf_rdma"]
    (sf,) = found.devices
    assert sf.id == "mlx5_core.sf.5" and sf.aux is not None and sf.health_link == "p1"
    t = table(node, found)
    resp = allocate(t, [sf.id])
    own = sf.aux.rdma_char_devices
    assert [s[1] for s in specs(resp)] == [*own, "/dev/infiniband/rdma_cm"]
    n = own[-1].removeprefix("/dev/infiniband/uverbs")
    assert json.loads(resp.envs["PCIDEVICE_NVIDIA_COM_SF_RDMA_INFO"]) == {
        sf.id: {
            "generic": {"deviceID": sf.id},
            "rdma": {"issm": f"/dev/infiniband/issm{n}", "umad": f"/dev/infiniband/umad{n}",
                     "uverbs": f"/dev/infiniband/uverbs{n}",
                     "rdma_cm": "/dev/infiniband/rdma_cm", "rdma_dev": "mlx5_sf2"},
            "extra": {"site": "s", "token": "t"},
        }
    }  # fmt: skip


def test_vdpa_virtio(node: Path, extended: dict[str, PoolDiscovery]) -> None:
    t = table(node, extended["intel.com/vdpa_virtio"])
    resp = allocate(t, ["0000:5f:00.2"])
    assert specs(resp) == []  # the virtio netdev stays in the host; the CNI moves it
    assert json.loads(resp.envs["PCIDEVICE_INTEL_COM_VDPA_VIRTIO_INFO"]) == {
        "0000:5f:00.2": {"generic": {"deviceID": "0000:5f:00.2"}, "vdpa": {}}
    }
    assert devinfo(t, "0000:5f:00.2") == {
        "type": "vdpa", "version": "1.1.0",
        "vdpa": {"parent-device": "vdpa2", "driver": "virtio", "pci-address": "0000:5f:00.2",
                 "pf-pci-address": "0000:5e:00.0"},
    }  # fmt: skip


def test_ib_pkey_pool(node: Path, extended: dict[str, PoolDiscovery]) -> None:
    found = extended["intel.com/ib_8001"]
    assert [d.id for d in found.devices] == ["0000:3c:00.0", "0000:3c:00.1"]
    t = table(node, found)
    info = json.loads(allocate(t, ["0000:3c:00.1"]).envs["PCIDEVICE_INTEL_COM_IB_8001_INFO"])
    assert info["0000:3c:00.1"]["rdma"]["rdma_dev"] == "ibp59s0f0v1_ib"


def test_slingshot_cxi(node: Path, extended: dict[str, PoolDiscovery]) -> None:
    t = table(node, extended["hpe.com/slingshot"], cdi=True)
    resp = allocate(t, ["0000:c2:00.1", "0000:c2:00.0"])
    assert json.loads(resp.envs["PCIDEVICE_HPE_COM_SLINGSHOT_INFO"]) == {
        "0000:c2:00.1": {"generic": {"deviceID": "0000:c2:00.1"},
                         "cxi": {"dev-mount": "/dev/cxi2"}, "extra": {"fabric": "a"}},
        "0000:c2:00.0": {"generic": {"deviceID": "0000:c2:00.0"},
                         "cxi": {"dev-mount": "/dev/cxi1"}},
    }  # fmt: skip
    assert t.prepared["0000:c2:00.1"].families == ("cxi", "netdev")
    cdi = {d["name"]: d["containerEdits"] for d in spec_document(t)["devices"]}
    assert cdi["0000:c2:00.1"]["deviceNodes"] == [
        {"path": "/dev/cxi2", "hostPath": "/dev/cxi2", "permissions": RW}
    ]
    assert devinfo(t, "0000:c2:00.1") == {
        "type": "pci", "version": "1.1.0",
        "pci": {"pci-address": "0000:c2:00.1", "pf-pci-address": "0000:c1:00.0"},
        "extra": {"fabric": "a"},
    }  # fmt: skip
    plain = table(node, extended["hpe.com/slingshot"])
    assert specs(allocate(plain, ["0000:c2:00.1", "0000:c2:00.0"])) == [
        ("/dev/cxi2", "/dev/cxi2", RW), ("/dev/cxi1", "/dev/cxi1", RW),
    ]  # fmt: skip
