"""sriovdp.shared.pools.explain, and the legacy sriovMode semantics: every device a pool leaves
out has a reason, every name that is not on the node is listed, on fake sysfs trees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sriovdp.shared import pools, sysfs
from sriovdp.shared.config import parse_config
from sriovdp.shared.model import NodeConfig, PoolDiscovery
from sriovdp.simnode import FakeSysfs, demo_node


def cfg(*entries: dict[str, Any]) -> NodeConfig:
    return parse_config(json.dumps({"resourceList": list(entries)}), "c.json", "intel.com")


def explained(node: FakeSysfs, config: NodeConfig) -> list[PoolDiscovery]:
    functions = sysfs.read_functions(node.root)
    return [pools.explain(r, functions) for r in pools.match(config, functions)]


def reasons(result: PoolDiscovery) -> dict[str, str]:
    return {e.id: e.reason for e in result.excluded}


@pytest.fixture
def node(tmp_path: Path) -> FakeSysfs:
    """demo_node (PFs 03:00.0 sim0pf0 and 03:00.1 sim0pf1, 8 VFs each: iavf, vfio-pci, igb_uio),
    a PF with no VFs yet, a NIC that is not SR-IOV capable and a QAT accelerator."""
    n = demo_node(tmp_path / "sys")
    n.add_pf("0000:06:00.0", netdev="empty0", num_vfs=0, total_vfs=8)
    n.add_function("0000:21:00.0", driver="e1000e", netdev="lan0")
    n.add_function("0000:20:00.0", driver="qat_4xxx", pci_class=0x120000, device="4940")
    return n


def test_sriov_mode_on_a_pf_without_vfs_says_why_and_takes_them_when_they_come(
    node: FakeSysfs,
) -> None:
    config = cfg(
        {"resourceName": "legacy", "rootDevices": ["06:00.0", "21:00.0"], "sriovMode": True},
        {"resourceName": "sel", "selectors": {"pfNames": ["EMPTY0"]}},
    )
    legacy, sel = explained(node, config)
    assert legacy.devices == () and sel.devices == ()
    assert reasons(legacy) == {
        "0000:06:00.0": "sriovMode true: PF with no VFs (sriov_numvfs 0); the pool takes its "
        "VFs when they are created, without a restart",
        "0000:21:00.0": "sriovMode true: not an SR-IOV PF (no sriov_totalvfs): it has no VFs "
        "to offer",
    }
    assert reasons(sel)["0000:06:00.0"].startswith("PF with no VFs (sriov_numvfs 0)")
    vfs = node.set_num_vfs("0000:06:00.0", 2)
    legacy, sel = explained(node, config)
    assert [d.id for d in legacy.devices] == vfs
    assert "0000:06:00.0" not in reasons(legacy)
    assert set(reasons(sel)) == set(vfs)  # claimed by the legacy pool


def test_names_that_are_not_on_the_node_are_listed(node: FakeSysfs) -> None:
    legacy, sel, fine = explained(
        node,
        cfg(
            {"resourceName": "legacy", "rootDevices": ["0000:99:00.0", "03:00.0"]},
            {"resourceName": "sel", "selectors": [
                {"pciAddresses": ["0000:98:00.1", "0000:04:00.0"]},
                {"rootDevices": ["0000:97:00.0#1-2"]},
                {"pfNames": ["nosuch0", "sim0pf1"]},
            ]},
            {"resourceName": "fine", "selectors": {"pfNames": ["SIM0PF0"]}},
        ),
    )  # fmt: skip
    assert legacy.not_found == ("0000:99:00.0",)
    assert sel.not_found == ("0000:98:00.1", "0000:97:00.0", "nosuch0")
    assert fine.not_found == ()


def test_a_selector_that_matches_but_for_the_class_says_so(node: FakeSysfs) -> None:
    named, by_vendor, accel = explained(
        node,
        cfg(
            {"resourceName": "named", "selectors": {"devices": ["4940"]}},
            {"resourceName": "by_vendor", "selectors": {"vendors": ["8086"]}},
            {"resourceName": "accel", "deviceType": "accelerator",
             "selectors": {"drivers": ["e1000e"]}},
        ),
    )  # fmt: skip
    assert named.devices == ()
    assert reasons(named) == {
        "0000:20:00.0": "PCI class 0x120000 is not a network controller (0x02), which "
        "deviceType netDevice offers"
    }
    # a vendor alone matches every bridge of that vendor: not worth a line each
    assert "0000:20:00.0" not in reasons(by_vendor)
    assert reasons(accel) == {
        "0000:21:00.0": "PCI class 0x020000 is not a processing accelerator (0x12), which "
        "deviceType accelerator offers"
    }


def test_link_types_on_functions_without_a_netdev(node: FakeSysfs) -> None:
    (dpdk,) = explained(
        node,
        cfg({"resourceName": "dpdk",
             "selectors": {"pfNames": ["sim0pf0"], "linkTypes": ["ether"]}}),
    )  # fmt: skip
    # the demo PF's VFs 4-5 are bound to vfio-pci, 6-7 to igb_uio: no netdev, no link type
    assert [d.id for d in dpdk.devices] == [f"0000:04:00.{i}" for i in range(4)]
    assert reasons(dpdk) == {
        **{
            f"0000:04:00.{i}": "no network interface (driver vfio-pci), so linkTypes ether "
            "cannot match"
            for i in (4, 5)
        },
        **{
            f"0000:04:00.{i}": "no network interface (driver igb_uio), so linkTypes ether "
            "cannot match"
            for i in (6, 7)
        },
    }


def test_legacy_sriov_mode_false_offers_the_pf_itself_and_warns(node: FakeSysfs) -> None:
    roots, vfs, later = explained(
        node,
        cfg(
            {"resourceName": "roots", "rootDevices": ["03:00.0"], "sriovMode": False},
            {"resourceName": "vfs", "rootDevices": ["03:00.0"], "sriovMode": True},
            {"resourceName": "later", "selectors": {"pciAddresses": ["03:00.0"]}},
        ),
    )
    assert [d.id for d in roots.devices] == ["0000:03:00.0"]
    assert roots.devices[0].health_link == "sim0pf0"
    assert roots.warnings == (
        "0000:03:00.0 has 8 VFs and is offered itself (sriovMode false); sriovMode true would "
        "offer its VFs instead",
    )
    assert [d.id for d in vfs.devices] == [f"0000:04:00.{i}" for i in range(4)]  # the iavf ones
    # a selector pool never offers a PF with VFs, whoever else does
    assert reasons(later) == {"0000:03:00.0": "PF with 8 VFs is not offered itself"}


def test_a_selector_pool_never_offers_a_pf_with_vfs(node: FakeSysfs) -> None:
    (sel,) = explained(node, cfg({"resourceName": "s", "selectors": {"pciAddresses": ["03:00.0"]}}))
    assert sel.devices == ()
    assert reasons(sel) == {"0000:03:00.0": "PF with 8 VFs is not offered itself"}


def test_discover_pool_of_a_missing_address_reads_nothing_and_offers_nothing(
    node: FakeSysfs, tmp_path: Path
) -> None:
    config = cfg({"resourceName": "gone", "rootDevices": ["0000:99:00.0"]})
    reader = sysfs.Reader(node.root)
    found = pools.discover_pool(config, "intel-com_gone", node.root, tmp_path, reader)
    assert found.devices == () and found.excluded == ()
    assert reader.opened == []
