"""sriovdp.shared.pools: every selector, ranges, first match wins, exclusions with reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sriovdp.shared import pools, sysfs
from sriovdp.shared.config import parse_config
from sriovdp.shared.model import NodeConfig, PoolDiscovery
from sriovdp.simnode import FakeSysfs, demo_config, demo_node


def cfg(*entries: dict[str, Any]) -> NodeConfig:
    return parse_config(json.dumps({"resourceList": list(entries)}), "c.json", "intel.com")


def pool(name: str, **kw: Any) -> dict[str, Any]:
    return {"resourceName": name, **kw}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> FakeSysfs:
    """demo_node plus a Mellanox PF with RDMA VFs, an accelerator, a plain NIC, a virtio uplink
    and an unbound function."""
    n = demo_node(tmp_path_factory.mktemp("node"))
    n.add_pf("0000:10:00.0", netdev="mlx0", driver="mlx5_core", vendor="15b3", device="1017",
             vf_device="1018", num_vfs=4, vf_driver="mlx5_core", link_type="infiniband",
             rdma=True, numa_node=1)  # fmt: skip
    n.add_function("0000:20:00.0", driver="qat_4xxx", pci_class=0x120000, device="4940")
    n.add_function("0000:21:00.0", driver="e1000e", netdev="lan0", acpi_index="7")
    n.add_function("0000:00:03.0", driver="virtio-pci", vendor="1af4", device="1000",
                   netdev="eth0", virtio=True)  # fmt: skip
    n.add_function("0000:22:00.0", driver=None, netdev=None)
    return n


def run(node: FakeSysfs, config: NodeConfig, routes: tuple[str, ...] = ()) -> list[PoolDiscovery]:
    return pools.match(config, sysfs.read_functions(node.root), routes)


def ids(result: PoolDiscovery) -> list[str]:
    return [d.id for d in result.devices]


def excluded(result: PoolDiscovery) -> dict[str, str]:
    return {e.id: e.reason for e in result.excluded}


def only(node: FakeSysfs, **selectors: Any) -> list[str]:
    (result,) = run(node, cfg(pool("p", selectors=selectors)))
    return ids(result)


PF0_VFS = [f"0000:04:00.{i}" for i in range(8)]
PF1_VFS = [f"0000:05:00.{i}" for i in range(8)]
MLX_VFS = [f"0000:11:00.{i}" for i in range(4)]


def test_each_selector_field(node: FakeSysfs) -> None:
    assert only(node, vendors=["15b3"]) == MLX_VFS
    assert only(node, devices=["154c"]) == PF0_VFS + PF1_VFS
    assert only(node, drivers=["vfio-pci"]) == ["0000:04:00.4", "0000:04:00.5",
                                                "0000:05:00.4", "0000:05:00.5"]  # fmt: skip
    assert only(node, pciAddresses=["21:00.0", "0000:04:00.7"]) == ["0000:04:00.7", "0000:21:00.0"]
    assert only(node, pfNames=["SIM0PF1"]) == PF1_VFS  # names compare case-insensitively
    assert only(node, pfNames=["0000:03:00.0#7"]) == ["0000:04:00.7"]
    assert only(node, rootDevices=["03:00.1#0,6-7"]) == ["0000:05:00.0", "0000:05:00.6",
                                                         "0000:05:00.7"]  # fmt: skip
    assert only(node, linkTypes=["infiniband"]) == MLX_VFS
    assert only(node, acpiIndexes=["7"]) == ["0000:21:00.0"]
    assert only(node, isRdma=True) == MLX_VFS
    assert "0000:11:00.0" not in only(node, isRdma=False)
    assert "0000:04:00.0" in only(node, isRdma=False)


def test_fields_and_values_or(node: FakeSysfs) -> None:
    assert only(node, vendors=["8086"], drivers=["igb_uio"], pfNames=["sim0pf0"]) == [
        "0000:04:00.6",
        "0000:04:00.7",
    ]
    assert only(node, pfNames=["sim0pf0#1", "sim0pf1#2-3"]) == [
        "0000:04:00.1",
        "0000:05:00.2",
        "0000:05:00.3",
    ]
    # an empty field list is not applied
    assert only(node, drivers=[], pfNames=["sim0pf0#0"]) == ["0000:04:00.0"]


def test_non_vfs_never_match_pf_filters(node: FakeSysfs) -> None:
    assert not set(only(node, pfNames=["sim0pf0", "lan0", "eth0"])) - set(PF0_VFS)


def test_device_type_restricts_the_class(node: FakeSysfs) -> None:
    acc, net = run(
        node,
        cfg(
            pool("acc", deviceType="accelerator", selectors={"vendors": ["8086"]}),
            pool("net", selectors={"devices": ["4940"]}),
        ),
    )
    assert ids(acc) == ["0000:20:00.0"]
    assert ids(net) == []
    assert excluded(net) == {}  # a class mismatch is not a candidate at all


def test_selector_list_and_options_carried(node: FakeSysfs) -> None:
    (result,) = run(
        node,
        cfg(
            pool(
                "p",
                selectors=[
                    {"vendors": ["15b3"], "isRdma": True},
                    {"pfNames": ["sim0pf0#0"], "needVhostNet": True},
                ],
                additionalInfo={"*": {"a": "1", "b": "2"}, "04:00.0": {"b": "3"}},
            )
        ),
    )
    devs = {d.id: d for d in result.devices}
    assert devs["0000:11:00.0"].is_rdma and not devs["0000:11:00.0"].need_vhost_net
    assert devs["0000:04:00.0"].need_vhost_net and not devs["0000:04:00.0"].is_rdma
    assert devs["0000:04:00.0"].extra == (("a", "1"), ("b", "3"))
    assert devs["0000:11:00.0"].extra == (("a", "1"), ("b", "2"))
    assert devs["0000:11:00.0"].function.rdma_devices == ("mlx0v0_ib",)


def test_health_link(node: FakeSysfs) -> None:
    addresses = ["0000:04:00.4", "0000:21:00.0"]
    (result,) = run(node, cfg(pool("p", selectors={"pciAddresses": addresses})))
    health = {d.id: d.health_link for d in result.devices}
    assert health == {"0000:04:00.4": "sim0pf0", "0000:21:00.0": "lan0"}
    acc = run(node, cfg(pool("q", deviceType="accelerator", selectors={})))[0]
    assert [d.health_link for d in acc.devices] == [None]


def test_first_match_wins(node: FakeSysfs) -> None:
    a, b = run(
        node,
        cfg(
            pool("a", selectors={"pfNames": ["sim0pf0#0-1"]}),
            pool("b", selectors={"pfNames": ["sim0pf0#0-3"]}),
        ),
    )
    assert ids(a) == ["0000:04:00.0", "0000:04:00.1"]
    assert ids(b) == ["0000:04:00.2", "0000:04:00.3"]
    assert excluded(b) == {
        "0000:04:00.0": "claimed by earlier pool intel.com/a",
        "0000:04:00.1": "claimed by earlier pool intel.com/a",
    }


def test_global_exclusions(node: FakeSysfs) -> None:
    (result,) = run(node, cfg(pool("all", selectors={})), routes=("eth0",))
    reasons = excluded(result)
    assert reasons["0000:03:00.0"] == "PF with 8 VFs is not offered itself"
    assert reasons["0000:10:00.0"] == "PF with 4 VFs is not offered itself"
    assert reasons["0000:00:03.0"] == "carries the node's IPv4 default route (eth0)"
    assert reasons["0000:22:00.0"] == "no driver bound"
    assert "0000:21:00.0" in ids(result)
    assert "0000:20:00.0" not in reasons  # accelerator: other class


def test_pf_without_vfs_is_offered(tmp_path: Path) -> None:
    n = FakeSysfs(tmp_path)
    n.add_pf("0000:03:00.0", netdev="p0", num_vfs=0)
    (result,) = pools.match(cfg(pool("p", selectors={})), sysfs.read_functions(tmp_path))
    assert ids(result) == ["0000:03:00.0"]


def test_legacy_driver_kinds_and_fall_through(node: FakeSysfs) -> None:
    net, vfio, uio, pfs = run(
        node,
        cfg(
            pool("net", rootDevices=["03:00.0"], sriovMode=True),
            pool("vfio", rootDevices=["03:00.0"], sriovMode=True, deviceType="vfio"),
            pool("uio", rootDevices=["03:00.0"], sriovMode=True, deviceType="uio"),
            pool("pfs", rootDevices=["03:00.0", "20:00.0"], deviceType="netdevice"),
        ),
    )
    assert ids(net) == PF0_VFS[:4]
    assert excluded(net)["0000:04:00.4"] == "driver vfio-pci contradicts deviceType netdevice"
    assert excluded(net)["0000:04:00.6"] == "driver igb_uio contradicts deviceType netdevice"
    assert ids(vfio) == PF0_VFS[4:6]
    assert excluded(vfio)["0000:04:00.0"] == "claimed by earlier pool intel.com/net"
    assert excluded(vfio)["0000:04:00.6"] == "driver igb_uio contradicts deviceType vfio"
    assert ids(uio) == PF0_VFS[6:]
    # sriovMode false offers the root devices themselves, a PF with VFs too (the seed README)
    assert ids(pfs) == ["0000:03:00.0"]
    assert excluded(pfs) == {
        "0000:20:00.0": "driver qat_4xxx contradicts deviceType netdevice (no network interface)",
    }


def test_demo_config_on_demo_node(tmp_path: Path) -> None:
    demo_node(tmp_path)
    config = parse_config(json.dumps(demo_config()), "demo.json", "intel.com")
    net, vfio, uio = pools.discover(config, tmp_path, tmp_path / "no-proc")
    assert (len(net.devices), len(vfio.devices), len(uio.devices)) == (8, 4, 4)
    assert len(net.excluded) == 8
    assert vfio.excluded == uio.excluded == ()


def test_discover_pool_agrees_with_discover(node: FakeSysfs, tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
    )
    config = cfg(
        pool("a", selectors={"pfNames": ["sim0pf0#0-1"]}),
        pool("b", selectors={}),
        pool("c", selectors={"drivers": ["igb_uio"]}),
    )
    everything = pools.discover(config, node.root, tmp_path)
    for p, expected in zip(config.pools, everything, strict=True):
        assert pools.discover_pool(config, p.child_name, node.root, tmp_path) == expected
    assert excluded(everything[1])["0000:00:03.0"].startswith("carries the node's IPv4")
    with pytest.raises(KeyError):
        pools.discover_pool(config, "intel-com_nope", node.root, tmp_path)
