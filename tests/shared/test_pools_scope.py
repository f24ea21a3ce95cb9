"""discover_pool reads only what its pool can need and still says what discover() says.

Property-style: many random fake nodes and configs (overlapping pools, pfNames by name in any
case and by address, ``#`` ranges, rootDevices, legacy pools of every kind, pciAddresses,
driver/vendor/linkType/isRdma-only selectors), each pool's ``discover_pool`` compared with its
entry of ``discover``; then proofs, through ``Reader.opened``, that the targeted path opens no
function outside its candidates.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from sriovdp.shared import pools, sysfs
from sriovdp.shared.config import parse_config
from sriovdp.shared.model import NodeConfig
from sriovdp.simnode import FakeSysfs, demo_config, demo_node, scale_node

VF_DRIVERS = ("iavf", "iavf", "vfio-pci", "igb_uio", None, "mlx5_core")


def cfg(entries: list[dict[str, Any]]) -> NodeConfig:
    return parse_config(json.dumps({"resourceList": entries}), "c.json", "intel.com")


def routes(proc: Path, iface: str | None) -> Path:
    (proc / "net").mkdir(parents=True, exist_ok=True)
    rows = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
    if iface is not None:
        rows += f"{iface}\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
    (proc / "net/route").write_text(rows)
    return proc


def random_node(rng: random.Random, root: Path) -> tuple[FakeSysfs, list[tuple[str, str]], str]:
    """PFs (address, netdev) with random VFs and drivers, plus other function kinds."""
    node = FakeSysfs(root)
    pfs: list[tuple[str, str]] = []
    for p in range(rng.randint(1, 4)):
        address, netdev = f"0000:{0x10 + 0x10 * p:02x}:00.0", f"Net{p}pf"
        vendor = rng.choice(("8086", "15b3"))
        node.add_pf(address, netdev=netdev, vendor=vendor, num_vfs=rng.randint(0, 10),
                    total_vfs=12, vf_driver=lambda i: rng.choice(VF_DRIVERS),
                    link_type=rng.choice(("ether", "ether", "infiniband")),
                    rdma=rng.random() < 0.3, numa_node=p % 2)  # fmt: skip
        pfs.append((address, netdev))
    node.add_function("0000:00:03.0", driver="virtio-pci", vendor="1af4", device="1000",
                      netdev="eth0", virtio=True)  # fmt: skip
    node.add_function("0000:00:05.0", driver="qat_4xxx", pci_class=0x120000, device="4940")
    node.add_function("0000:00:06.0", driver="e1000e", netdev="lan0", acpi_index="3")
    node.add_function("0000:00:07.0", driver=None)
    node.add_function("0000:00:08.0", driver="vfio-pci", noiommu=True)
    default_route = rng.choice((None, "eth0", "lan0", pfs[0][1]))
    return node, pfs, default_route or ""


def vf_filter(rng: random.Random, pf: tuple[str, str], by_name: bool) -> str:
    address, netdev = pf
    base = address if not by_name else rng.choice((netdev, netdev.lower(), netdev.upper()))
    if not by_name and rng.random() < 0.5:
        base = address.removeprefix("0000:")  # short form, normalised by the config
    roll = rng.random()
    if roll < 0.4:
        return base
    if roll < 0.7:
        lo = rng.randint(0, 6)
        return f"{base}#{lo}-{lo + rng.randint(0, 4)}"
    return f"{base}#" + ",".join(str(i) for i in sorted(rng.sample(range(12), 3)))


def random_selector(
    rng: random.Random, pfs: list[tuple[str, str]], vfs: list[str]
) -> dict[str, Any]:
    kind = rng.choice(("pfNames", "pfNames", "rootDevices", "pciAddresses", "drivers", "mixed"))
    sel: dict[str, Any] = {}
    if kind == "pfNames":
        sel["pfNames"] = [vf_filter(rng, pf, rng.random() < 0.7) for pf in rng.sample(pfs, 1)]
    elif kind == "rootDevices":
        sel["rootDevices"] = [vf_filter(rng, pf, False) for pf in rng.sample(pfs, 1)]
    elif kind == "pciAddresses":
        extra = ["0000:00:06.0", "0000:00:03.0", pfs[0][0], "0000:7f:00.0"]
        sel["pciAddresses"] = rng.sample(vfs + extra, min(len(vfs) + len(extra), 4))
    elif kind == "drivers":
        sel["drivers"] = [rng.choice(("iavf", "vfio-pci", "igb_uio", "mlx5_core", "e1000e"))]
    else:
        sel["pfNames"] = [vf_filter(rng, rng.choice(pfs), True)]
    for key, values in (("drivers", ["iavf", "vfio-pci", "mlx5_core"]),
                        ("vendors", ["8086", "15b3", "1af4"]),
                        ("linkTypes", ["ether", "infiniband"])):  # fmt: skip
        if key not in sel and rng.random() < 0.25:
            sel[key] = [rng.choice(values)]
    if rng.random() < 0.15:
        sel["isRdma"] = rng.random() < 0.5
    return sel


def random_pool(
    rng: random.Random, name: str, pfs: list[tuple[str, str]], vfs: list[str]
) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.2:  # legacy
        sriov = rng.random() < 0.7
        roots = [a for a, _ in rng.sample(pfs, rng.randint(1, len(pfs)))]
        if not sriov:
            roots += [*rng.sample(vfs, min(2, len(vfs))), "0000:00:05.0"]
        return {"resourceName": name, "rootDevices": roots, "sriovMode": sriov,
                "deviceType": rng.choice(("netdevice", "vfio", "uio"))}  # fmt: skip
    entry: dict[str, Any] = {"resourceName": name}
    if roll < 0.3:
        entry["deviceType"] = "accelerator"
        entry["selectors"] = {"drivers": ["qat_4xxx"]} if rng.random() < 0.5 else {}
        return entry
    n = rng.randint(1, 2)
    entry["selectors"] = [random_selector(rng, pfs, vfs) for _ in range(n)]
    return entry


def compare_all(config: NodeConfig, root: Path, proc: Path, why: str) -> None:
    everything = pools.discover(config, root, proc)
    for p, expected in zip(config.pools, everything, strict=True):
        got = pools.discover_pool(config, p.child_name, root, proc)
        assert got == expected, f"{why}: pool {p.resource_name}"


@pytest.mark.parametrize("seed", range(30))
def test_discover_pool_equals_discover_on_random_nodes(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    node, pfs, default_route = random_node(rng, tmp_path / "sys")
    proc = routes(tmp_path / "proc", default_route or None)
    vfs = [f.address for f in sysfs.read_functions(node.root) if f.is_vf]
    entries = [random_pool(rng, f"p{i}", pfs, vfs) for i in range(rng.randint(2, 6))]
    config = cfg(entries)
    compare_all(config, node.root, proc, f"seed {seed}: {json.dumps(entries)}")
    if seed % 4 == 0:  # no class/net: names are found by reading the PFs
        shutil.rmtree(node.root / "class/net")
        compare_all(config, node.root, proc, f"seed {seed} without class/net")


def test_demo_config_and_overlaps(tmp_path: Path) -> None:
    node = demo_node(tmp_path / "sys")
    proc = routes(tmp_path / "proc", None)
    compare_all(cfg(demo_config()["resourceList"]), node.root, proc, "demo")
    overlapping: list[dict[str, Any]] = [
        {"resourceName": "a", "selectors": {"pfNames": ["sim0pf0#0-2"]}},
        {"resourceName": "b", "selectors": {"drivers": ["iavf"]}},
        {"resourceName": "c", "selectors": {"pfNames": ["SIM0PF0", "0000:03:00.1#1"]}},
        {
            "resourceName": "d",
            "rootDevices": ["03:00.0", "03:00.1"],
            "sriovMode": True,
            "deviceType": "vfio",
        },
        {"resourceName": "e", "selectors": [{"pciAddresses": ["04:00.3", "03:00.0"]}, {}]},
    ]
    compare_all(cfg(overlapping), node.root, proc, "overlapping")


# -- what is read ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> FakeSysfs:
    """4 PFs x 16 VFs (``scl0``..``scl3`` at ``0000:01:00.0``..``0000:01:00.3``)."""
    return scale_node(tmp_path_factory.mktemp("big"), 4, 16)


def opened(config: NodeConfig, child: str, root: Path, proc: Path) -> tuple[list[str], Any]:
    reader = sysfs.Reader(root)
    found = pools.discover_pool(config, child, root, proc, reader=reader)
    return reader.opened, found


def test_pf_names_read_only_that_pf_and_its_vfs(big: FakeSysfs, tmp_path: Path) -> None:
    config = cfg([{"resourceName": f"pool{p}", "selectors": {"pfNames": [f"scl{p}"]}}
                  for p in range(4)])  # fmt: skip
    seen, found = opened(config, "intel-com_pool2", big.root, tmp_path)
    vfs = [f"0000:04:{i // 8:02x}.{i % 8}" for i in range(16)]
    assert sorted(seen) == ["0000:01:00.2", *vfs]
    assert [d.id for d in found.devices] == vfs


def test_indexes_by_address_and_legacy_read_only_the_chosen_vfs(
    big: FakeSysfs, tmp_path: Path
) -> None:
    config = cfg([
        {"resourceName": "legacy", "rootDevices": ["01:00.0"], "sriovMode": True},
        {"resourceName": "few", "selectors": {"pfNames": ["0000:01:00.0#1,3", "scl1#15"]}},
        {"resourceName": "addr", "selectors": {"pciAddresses": ["0000:02:00.5"]}},
    ])  # fmt: skip
    seen, found = opened(config, "intel-com_few", big.root, tmp_path)
    assert sorted(seen) == ["0000:01:00.0", "0000:01:00.1", "0000:02:00.1", "0000:02:00.3",
                            "0000:03:01.7"]  # fmt: skip
    assert [d.id for d in found.devices] == ["0000:03:01.7"]
    assert {e.id: e.reason for e in found.excluded} == {
        "0000:02:00.1": "claimed by earlier pool intel.com/legacy",
        "0000:02:00.3": "claimed by earlier pool intel.com/legacy",
    }
    seen, _ = opened(config, "intel-com_addr", big.root, tmp_path)
    assert sorted(seen) == ["0000:01:00.0", "0000:02:00.5"]  # the VF and its PF (pf_name)


def test_functions_outside_the_candidates_are_never_opened(tmp_path: Path) -> None:
    """A broken function elsewhere on the bus leaves no trace: it is not even opened."""
    node = scale_node(tmp_path / "sys", 2, 4)
    (tmp_path / "sys/bus/pci/devices/0000:7f:00.0").symlink_to("0000:7f:00.0")  # a loop
    shutil.rmtree(node.device_dir("0000:03:00.1"))  # a VF of the other PF, gone
    config = cfg([{"resourceName": "p", "selectors": {"pfNames": ["scl0"]}}])
    seen, found = opened(config, "intel-com_p", node.root, tmp_path)
    assert "0000:7f:00.0" not in seen and "0000:03:00.1" not in seen
    assert all(d.function.warnings == () for d in found.devices)
    assert len(found.devices) == 4


def test_full_scan_skips_the_expensive_entries_of_ruled_out_functions(
    big: FakeSysfs, tmp_path: Path
) -> None:
    """A drivers selector leaves every other function after one readlink; a vendors selector
    reads only the cheap entries of functions of another vendor."""
    big.bind("0000:02:00.4", "vfio-pci")
    try:
        config = cfg([{"resourceName": "v", "selectors": {"drivers": ["vfio-pci"]}}])
        seen, found = opened(config, "intel-com_v", big.root, tmp_path)
        assert sorted(seen) == ["0000:01:00.0", "0000:02:00.4"]  # the VF and its PF
        assert [d.id for d in found.devices] == ["0000:02:00.4"]
        compare_all(config, big.root, tmp_path, "vfio")
    finally:
        big.bind("0000:02:00.4", "iavf", netdev="scl0v4")

    calls: list[str] = []
    keep = pools._could_match(cfg([{"resourceName": "m", "selectors": {"vendors": ["15b3"]}}])
                              .pools[0])  # fmt: skip

    def spy(b: sysfs.Basics) -> bool:
        calls.append(b.address)
        return keep(b)

    assert sysfs.Reader(big.root).functions(keep=spy) == []
    assert len(calls) == 4 + 4 * 16


def test_pf_named_by_a_netdev_of_another_case_or_without_class_net(tmp_path: Path) -> None:
    node = scale_node(tmp_path / "sys", 3, 2)
    config = cfg([{"resourceName": "p", "selectors": {"pfNames": ["SCL1"]}}])
    seen, found = opened(config, "intel-com_p", node.root, tmp_path)
    assert sorted(seen) == ["0000:01:00.1", "0000:03:00.0", "0000:03:00.1"]
    shutil.rmtree(node.root / "class/net")
    seen, again = opened(config, "intel-com_p", node.root, tmp_path)
    assert again == found
    assert sorted(seen) == ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2",
                            "0000:03:00.0", "0000:03:00.1"]  # PFs only, then the VFs  # fmt: skip


def test_scope(big: FakeSysfs) -> None:
    config = cfg([
        {"resourceName": "a", "selectors": [{"pfNames": ["scl3#0-1"]},
                                            {"pciAddresses": ["0000:00:1f.0"]}]},
        {"resourceName": "b", "selectors": [{"pfNames": ["scl3"]}, {"vendors": ["8086"]}]},
    ])  # fmt: skip
    scope = pools.pool_scope(config.pools[0], sysfs.Reader(big.root))
    assert scope == pools.Scope(("0000:01:00.3",), ("0000:00:1f.0", "0000:05:00.0", "0000:05:00.1"))
    assert pools.pool_scope(config.pools[1], sysfs.Reader(big.root)) is None


def test_the_one_difference_a_vf_its_pf_does_not_list(tmp_path: Path) -> None:
    """Documented: a VF whose PF lacks the virtfnN link (a broken tree) is left out by the
    targeted path; discover() still offers it to a pfNames selector without indexes."""
    node = demo_node(tmp_path / "sys")
    (node.device_dir("0000:03:00.0") / "virtfn3").unlink()
    config = cfg([{"resourceName": "p", "selectors": {"pfNames": ["sim0pf0"]}}])
    (everything,) = pools.discover(config, node.root, tmp_path)
    mine = pools.discover_pool(config, "intel-com_p", node.root, tmp_path)
    assert {d.id for d in everything.devices} - {d.id for d in mine.devices} == {"0000:04:00.3"}
