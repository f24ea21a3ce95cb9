"""Pool membership for the upstream device kinds: the upstream README's config on a node with a
device of every kind, SFs, vDPA, pKeys, DDP (recorded devlink answers), additionalInfo, CXI, and
the README's two selector-order examples."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sriovdp.shared import pools, sysfs
from sriovdp.shared.config import config_warnings, parse_config
from sriovdp.shared.ddp import DdpReader
from sriovdp.shared.model import NodeConfig, PciFunction, PoolDiscovery
from sriovdp.simnode import upstream_node, upstream_readme_config

INTEL_10ED = ["0000:1b:00.0", "0000:1b:00.1"]
INTEL_154C_IAVF = [f"0000:19:00.{i}" for i in range(4)]
E810_VFS = [f"0000:1d:00.{i}" for i in range(4)]
IB_VFS = [f"0000:3c:00.{i}" for i in range(4)]


class RecordedDevlink:
    """Devlink's answers as recorded on a node (``devlink dev info pci/<address> -j``)."""

    def __init__(self, answers: dict[str, list[tuple[str, str]] | int]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    def running_versions(self, bus: str, device: str) -> list[tuple[str, str]]:
        self.asked.append((bus, device))
        answer = self.answers.get(device, errno.ENODEV)
        if isinstance(answer, int):
            raise OSError(answer, os.strerror(answer))
        return answer


#: what an E810 with the ice driver reports (the DDP package is fw.app.name)
E810_COMMS = [
    ("fw.mgmt", "7.3.4"), ("fw.mgmt.api", "1.7.11"), ("fw.undi", "1.3429.0"),
    ("fw.psid.api", "3.45"), ("fw.bundle_id", "0x8001bc3c"),
    ("fw.app.name", "ICE COMMS Package"), ("fw.app", "1.3.35.0"),
    ("fw.app.bundle_id", "0xc0000002"), ("fw.netlist", "4.2.1000-1.22.0.e44d8a2d"),
]  # fmt: skip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("node")
    upstream_node(root / "sys")
    return root


def config(doc: dict[str, Any]) -> NodeConfig:
    return parse_config(json.dumps(doc), "c.json", "intel.com")


def by_resource(results: list[PoolDiscovery]) -> dict[str, PoolDiscovery]:
    return {r.pool.resource: r for r in results}


def ids(result: PoolDiscovery) -> list[str]:
    return [d.id for d in result.devices]


def excluded(result: PoolDiscovery) -> dict[str, str]:
    return {e.id: e.reason for e in result.excluded}


def test_upstream_readme_config_discovers_every_pool(node: Path) -> None:
    cfg = config(upstream_readme_config())
    assert config_warnings(cfg) == [
        'c.json: resourceList[2]: drivers "mlx5_ib" never matches: it is not a PCI driver '
        '(such functions are bound to "mlx5_core")'
    ]
    got = by_resource(pools.discover(cfg, node / "sys", node / "proc"))
    assert list(got) == [
        "intel.com/intel_sriov_netdevice", "intel.com/intel_sriov_dpdk",
        "mellanox.com/mlnx_sriov_rdma", "intel.com/infiniband_rdma_netdevs",
        "intel.com/ct6dx_vdpa_vhost", "intel.com/intel_fpga", "nvidia.com/bf2_sf",
        "intel.com/intel_sriov_netdevice_additional_env", "broadcom.com/brcm_sriov_bnxt",
        "intel.com/old_selectors_syntax_example",
    ]  # fmt: skip
    first = "claimed by earlier pool intel.com/intel_sriov_netdevice"
    claimed = dict.fromkeys(INTEL_154C_IAVF + INTEL_10ED + E810_VFS, first)
    expected: dict[str, tuple[list[str], dict[str, str]]] = {
        "intel.com/intel_sriov_netdevice": (INTEL_154C_IAVF + INTEL_10ED + E810_VFS, {}),
        "intel.com/intel_sriov_dpdk": (
            [f"0000:19:00.{i}" for i in range(4, 8)] + ["0000:1b:00.2", "0000:1b:00.3"],
            {},
        ),
        "mellanox.com/mlnx_sriov_rdma": ([], {}),
        "intel.com/infiniband_rdma_netdevs": (
            IB_VFS,
            {"0000:3b:00.0": "PF with 4 VFs is not offered itself"},
        ),
        "intel.com/ct6dx_vdpa_vhost": (
            ["0000:5f:00.0", "0000:5f:00.1"],
            {
                "0000:5f:00.2": "vDPA device vdpa2 is bound to virtio_vdpa, not vhost",
                "0000:5f:00.3": "no vDPA device (vdpaType vhost)",
            },
        ),
        "intel.com/intel_fpga": (["0000:b0:00.0", "0000:b0:00.1"], {}),
        "nvidia.com/bf2_sf": (
            ["mlx5_core.sf.0", "mlx5_core.sf.1", "mlx5_core.sf.3"],
            {"mlx5_core.sf.2": "no driver bound"},
        ),
        "intel.com/intel_sriov_netdevice_additional_env": ([], claimed),
        "broadcom.com/brcm_sriov_bnxt": (["0000:d8:00.0"], {}),
        "intel.com/old_selectors_syntax_example": ([], claimed),
    }
    for resource, (want_ids, want_excluded) in expected.items():
        assert (ids(got[resource]), excluded(got[resource])) == (want_ids, want_excluded), resource


def test_each_worker_sees_what_discover_sees(node: Path) -> None:
    cfg = config(upstream_readme_config())
    whole = pools.discover(cfg, node / "sys", node / "proc")
    for pool, result in zip(cfg.pools, whole, strict=True):
        assert pools.discover_pool(cfg, pool.child_name, node / "sys", node / "proc") == result


def test_sfs_follow_their_parent_pf(node: Path) -> None:
    cfg = config(upstream_readme_config())
    sf = by_resource(pools.discover(cfg, node / "sys", node / "proc"))["nvidia.com/bf2_sf"]
    for dev in sf.devices:
        assert dev.aux is not None and dev.function.address == "0000:03:00.0"
        assert dev.health_link == "p0"
        assert not dev.is_rdma  # the README's pool does not ask for isRdma
    assert [d.aux.index for d in sf.devices if d.aux] == [1, 2, 4]


def test_sf_selectors(node: Path) -> None:
    doc = {"resourceList": [
        {"resourceName": "sf_rdma", "deviceType": "auxNetDevice",
         "selectors": [{"rootDevices": ["0000:03:00.1"], "isRdma": True},
                       {"pfNames": ["P0#2-7"], "auxTypes": ["sf"], "drivers": ["mlx5_core"],
                        "linkTypes": ["ether"]}]},
        {"resourceName": "sf_rest", "deviceType": "auxNetDevice", "selectors": {}},
    ]}  # fmt: skip
    got = by_resource(pools.discover(config(doc), node / "sys", node / "proc"))
    rdma = got["intel.com/sf_rdma"]
    assert ids(rdma) == ["mlx5_core.sf.1", "mlx5_core.sf.3", "mlx5_core.sf.4", "mlx5_core.sf.5"]
    flags = {d.id: d.is_rdma for d in rdma.devices}
    assert flags == {"mlx5_core.sf.1": False, "mlx5_core.sf.3": False, "mlx5_core.sf.4": False,
                     "mlx5_core.sf.5": True}  # fmt: skip
    assert excluded(rdma) == {}  # the unbound SF has no netdev, hence no link type
    rest = got["intel.com/sf_rest"]
    assert ids(rest) == ["mlx5_core.sf.0"]
    assert excluded(rest) == {
        "mlx5_core.eth.0": "no network interface (not an auxiliary network device)",
        "mlx5_core.sf.2": "no driver bound",
        **dict.fromkeys(ids(rdma), "claimed by earlier pool intel.com/sf_rdma"),
    }


def test_pkeys_match_the_default_pkey_in_any_spelling(node: Path) -> None:
    doc = {
        "resourceList": [
            {
                "resourceName": "ib_8001",
                "selectors": [
                    {"linkTypes": ["infiniband"], "isRdma": True, "pKeys": ["0X8001", "abcd"]}
                ],
            }
        ]
    }
    (got,) = pools.discover(config(doc), node / "sys", node / "proc")
    assert ids(got) == ["0000:3c:00.0", "0000:3c:00.1"]
    assert excluded(got) == {
        "0000:3b:00.0": "PF with 4 VFs is not offered itself",
        "0000:3c:00.2": "default pkey 0x7fff not in pKeys",
        "0000:3c:00.3": "default pkey 0xffff not in pKeys",
    }


def test_vdpa_virtio_pool(node: Path) -> None:
    doc = {
        "resourceList": [
            {"resourceName": "virtio", "selectors": [{"devices": ["101e"], "vdpaType": "virtio"}]}
        ]
    }
    (got,) = pools.discover(config(doc), node / "sys", node / "proc")
    assert ids(got) == ["0000:5f:00.2"]
    assert excluded(got) == {
        "0000:5f:00.0": "vDPA device vdpa0 is bound to vhost_vdpa, not virtio",
        "0000:5f:00.1": "vDPA device vdpa1 is bound to vhost_vdpa, not virtio",
        "0000:5f:00.3": "no vDPA device (vdpaType virtio)",
    }


def test_ddp_profiles_from_recorded_devlink_answers(node: Path) -> None:
    doc = {"resourceList": [
        {"resourceName": "gtp", "selectors": [{"devices": ["1889"],
                                               "ddpProfiles": ["ICE OS Default Package"]}]},
        {"resourceName": "comms", "selectors": [{"devices": ["1889", "154c"],
                                                 "drivers": ["iavf"],
                                                 "ddpProfiles": ["ICE COMMS Package"]}]},
    ]}  # fmt: skip
    devlink = RecordedDevlink({"0000:1c:00.0": E810_COMMS, "0000:18:00.0": errno.EOPNOTSUPP})
    got = by_resource(pools.match(config(doc), _functions(node), (), (), DdpReader(devlink)))
    assert ids(got["intel.com/gtp"]) == []
    assert set(excluded(got["intel.com/gtp"]).values()) == {
        "PF 0000:1c:00.0 runs DDP package 'ICE COMMS Package', not one of ddpProfiles"
    }
    assert ids(got["intel.com/comms"]) == E810_VFS
    assert excluded(got["intel.com/comms"]) == dict.fromkeys(
        INTEL_154C_IAVF,
        "devlink cannot answer for PF 0000:18:00.0: the driver does not report device info",
    )
    assert devlink.asked == [("pci", "0000:18:00.0"), ("pci", "0000:1c:00.0")]  # once per PF


def test_a_pf_devlink_does_not_know_is_excluded_with_the_reason(node: Path) -> None:
    doc = {
        "resourceList": [
            {
                "resourceName": "gtp",
                "selectors": [{"devices": ["1889"], "ddpProfiles": ["ICE COMMS Package"]}],
            }
        ]
    }
    (got,) = pools.match(config(doc), _functions(node), (), (), DdpReader(RecordedDevlink({})))
    assert excluded(got) == dict.fromkeys(
        E810_VFS, "devlink cannot answer for PF 0000:1c:00.0: no devlink instance for it"
    )
    no_app = RecordedDevlink({"0000:1c:00.0": [("fw.mgmt", "7.3.4")]})
    (got,) = pools.match(config(doc), _functions(node), (), (), DdpReader(no_app))
    assert set(excluded(got).values()) == {"devlink reports no fw.app.name for PF 0000:1c:00.0"}


def test_cxi_functions_are_plain_selector_matches(node: Path) -> None:
    doc = {
        "resourceList": [
            {
                "resourceName": "slingshot",
                "resourcePrefix": "hpe.com",
                "selectors": [{"vendors": ["17db"], "drivers": ["cxi_ss1"]}],
            }
        ]
    }
    (got,) = pools.discover(config(doc), node / "sys", node / "proc")
    assert ids(got) == ["0000:c2:00.0", "0000:c2:00.1"]
    assert [d.function.cxi_devices for d in got.devices] == [("cxi1",), ("cxi2",)]
    assert [d.health_link for d in got.devices] == ["hsn0", "hsn0"]


def test_additional_info_by_id_and_the_ids_that_match_nothing(node: Path) -> None:
    doc = {"resourceList": [
        {"resourceName": "net", "selectors": [{"devices": ["10ed"], "drivers": ["ixgbevf"]}],
         "additionalInfo": {"*": {"token": "all", "site": "a"},
                            "0000:1b:00.1": {"token": "mine"},
                            "0000:1b:00.7": {"token": "nobody"}}},
        {"resourceName": "sf", "deviceType": "auxNetDevice", "selectors": [{"pfNames": ["p0"]}],
         "additionalInfo": {"0000:03:00.0": {"parent": "yes", "token": "parent"},
                            "mlx5_core.sf.1": {"token": "sf"},
                            "mlx5_core.sf.99": {"token": "nobody"}}},
    ]}  # fmt: skip
    got = by_resource(pools.discover(config(doc), node / "sys", node / "proc"))
    net = {d.id: dict(d.extra) for d in got["intel.com/net"].devices}
    assert net == {"0000:1b:00.0": {"token": "all", "site": "a"},
                   "0000:1b:00.1": {"token": "mine", "site": "a"}}  # fmt: skip
    assert got["intel.com/net"].unused_info_ids == ("0000:1b:00.7",)
    sf = {d.id: dict(d.extra) for d in got["intel.com/sf"].devices}
    assert sf["mlx5_core.sf.0"] == {"parent": "yes", "token": "parent"}  # upstream's key
    assert sf["mlx5_core.sf.1"] == {"parent": "yes", "token": "sf"}  # ours overrides it
    assert got["intel.com/sf"].unused_info_ids == ("mlx5_core.sf.99",)


README_DEVICES = {"vendors": ["8086"], "devices": ["154c"]}


def test_selector_order_first_readme_example(node: Path) -> None:
    """``[{vendors 8086, devices 154c}, {vendors 8086, needVhostNet}]``: 154c devices come from
    the first object and get no vhost-net; other Intel devices get it from the second."""
    doc = {
        "resourceList": [
            {
                "resourceName": "intel",
                "selectors": [dict(README_DEVICES), {"vendors": ["8086"], "needVhostNet": True}],
            }
        ]
    }
    (got,) = pools.discover(config(doc), node / "sys", node / "proc")
    vhost = {d.id: d.need_vhost_net for d in got.devices}
    assert {a for a, v in vhost.items() if not v} == {f"0000:19:00.{i}" for i in range(8)}
    # the 82599 and E810 VFs; the accelerators are no network devices, Broadcom is no 8086
    assert {a for a, v in vhost.items() if v} == {
        *INTEL_10ED, "0000:1b:00.2", "0000:1b:00.3", *E810_VFS,
    }  # fmt: skip


def test_selector_order_second_readme_example(node: Path) -> None:
    """The same objects swapped: the first matches every Intel device, so all get vhost-net
    and the second object never applies."""
    doc = {
        "resourceList": [
            {
                "resourceName": "intel",
                "selectors": [{"vendors": ["8086"], "needVhostNet": True}, dict(README_DEVICES)],
            }
        ]
    }
    (got,) = pools.discover(config(doc), node / "sys", node / "proc")
    assert len(got.devices) == 8 + 4 + 4
    assert all(d.need_vhost_net for d in got.devices)


def _functions(node: Path) -> list[PciFunction]:
    return sysfs.read_functions(node / "sys")
