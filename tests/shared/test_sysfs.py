"""sriovdp.shared.sysfs over trees built by sriovdp.simnode, including broken ones."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sriovdp.shared import sysfs
from sriovdp.shared.messages import LinkState
from sriovdp.shared.model import PciFunction
from sriovdp.simnode import FakeSysfs, demo_node, scale_node, vf_address
from tests.harness.forked import in_child


def by_address(root: Path) -> dict[str, PciFunction]:
    return {f.address: f for f in sysfs.read_functions(root)}


@pytest.fixture
def demo(tmp_path: Path) -> FakeSysfs:
    return demo_node(tmp_path)


def test_demo_pf(demo: FakeSysfs) -> None:
    pf = by_address(demo.root)["0000:03:00.0"]
    assert (pf.vendor, pf.device, pf.pci_class, pf.driver) == ("8086", "1572", 0x020000, "i40e")
    assert pf.netdevs == ("sim0pf0",)
    assert (pf.sriov_totalvfs, pf.sriov_numvfs) == (8, 8)
    assert pf.vf_addresses == tuple(f"0000:04:00.{i}" for i in range(8))
    assert not pf.is_vf
    assert pf.warnings == ()


def test_demo_vfs_by_driver(demo: FakeSysfs) -> None:
    fns = by_address(demo.root)
    kernel, vfio, uio = fns["0000:05:00.1"], fns["0000:05:00.4"], fns["0000:05:00.6"]
    assert kernel.is_vf
    assert (kernel.pf_address, kernel.pf_name, kernel.vf_index) == ("0000:03:00.1", "sim0pf1", 1)
    assert (kernel.device, kernel.driver, kernel.netdevs) == ("154c", "iavf", ("sim0pf1v1",))
    assert (kernel.link_type, kernel.numa_node) == ("ether", 1)
    assert (vfio.driver, vfio.netdevs, vfio.vf_index) == ("vfio-pci", (), 4)
    assert vfio.iommu_group is not None
    assert not vfio.iommu_noiommu
    assert (uio.driver, uio.uio_devices) == ("igb_uio", ("uio2",))
    assert len(fns) == 18
    assert all(f.warnings == () for f in fns.values())


def test_other_function_kinds(tmp_path: Path) -> None:
    node = FakeSysfs(tmp_path)
    node.add_function("0000:00:03.0", driver="virtio-pci", vendor="1af4", device="1000",
                      netdev="eth0", virtio=True, numa_node=None)  # fmt: skip
    node.add_function("0000:00:04.0", driver="vfio-pci", noiommu=True)
    node.add_function("0000:00:05.0", driver="qat_4xxx", pci_class=0x120000, device="4940")
    node.add_function("0000:00:06.0", driver="mlx5_core", vendor="15b3", device="1017",
                      netdev="ib0", link_type="infiniband", rdma="mlx5_0")  # fmt: skip
    node.add_function("0000:00:07.0", driver=None, acpi_index="101")
    node.add_function("0000:00:08.0", driver="igb_uio")
    fns = by_address(tmp_path)
    virtio = fns["0000:00:03.0"]
    assert (virtio.netdevs, virtio.link_type, virtio.numa_node) == (("eth0",), "ether", None)
    assert fns["0000:00:04.0"].iommu_noiommu
    assert fns["0000:00:05.0"].pci_class == 0x120000
    rdma = fns["0000:00:06.0"]
    assert (rdma.link_type, rdma.rdma_devices) == ("infiniband", ("mlx5_0",))
    assert rdma.rdma_char_devices == (
        "/dev/infiniband/issm0",
        "/dev/infiniband/umad0",
        "/dev/infiniband/uverbs0",
    )
    assert (fns["0000:00:07.0"].driver, fns["0000:00:07.0"].acpi_index) == (None, "101")
    assert fns["0000:00:08.0"].uio_devices == ("uio0",)
    assert all(f.warnings == () for f in fns.values())
    assert sysfs.operstate(tmp_path, virtio) == "up"
    node.set_operstate("eth0", "down")
    assert sysfs.operstate(tmp_path, virtio) == "down"
    assert sysfs.operstate(tmp_path, fns["0000:00:04.0"]) is None


def test_set_num_vfs_and_remove(tmp_path: Path) -> None:
    node = FakeSysfs(tmp_path)
    vfs = node.add_pf("0000:81:00.0", netdev="p0", num_vfs=2, total_vfs=4,
                      vf_driver=lambda i: "vfio-pci" if i % 2 else "iavf")  # fmt: skip
    assert vfs == ["0000:82:00.0", "0000:82:00.1"]
    assert node.set_num_vfs("0000:81:00.0", 4, vf_driver="iavf")[2:] == [
        "0000:82:00.2",
        "0000:82:00.3",
    ]
    fns = by_address(tmp_path)
    assert [fns[v].driver for v in node.set_num_vfs("0000:81:00.0", 4)] == [
        "iavf",
        "vfio-pci",
        "iavf",
        "iavf",
    ]
    assert fns["0000:82:00.3"].netdevs == ("p0v3",)
    node.set_num_vfs("0000:81:00.0", 1)
    fns = by_address(tmp_path)
    assert sorted(fns) == ["0000:81:00.0", "0000:82:00.0"]
    assert fns["0000:81:00.0"].sriov_numvfs == 1
    assert not (tmp_path / "class/net/p0v3").exists()
    with pytest.raises(ValueError, match="supports 0-4"):
        node.set_num_vfs("0000:81:00.0", 5)
    node.remove_function("0000:81:00.0")
    assert sysfs.read_functions(tmp_path) == []


def test_vf_address_scheme() -> None:
    assert vf_address("0000:03:00.0", 0) == "0000:04:00.0"
    assert vf_address("0000:03:00.1", 9) == "0000:05:01.1"
    assert vf_address("0000:03:01.0", 255) == "0000:0c:1f.7"
    with pytest.raises(ValueError):
        vf_address("0000:03:00.0", 256)


def test_colliding_addresses_are_refused(tmp_path: Path) -> None:
    node = FakeSysfs(tmp_path)
    node.add_function("0000:04:00.0")
    with pytest.raises(ValueError, match="already exists"):
        node.add_pf("0000:03:00.0", netdev="x0", num_vfs=1)


def test_scale_node(tmp_path: Path) -> None:
    scale_node(tmp_path, pfs=3, vfs_per_pf=10)
    fns = sysfs.read_functions(tmp_path)
    assert len(fns) == 33
    assert sum(f.is_vf for f in fns) == 30
    assert {f.pf_name for f in fns if f.is_vf} == {"scl0", "scl1", "scl2"}


def test_subset_of_addresses_still_resolves_the_pf(demo: FakeSysfs) -> None:
    (vf,) = sysfs.read_functions(demo.root, ["0000:04:00.2"])
    assert (vf.pf_name, vf.vf_index) == ("sim0pf0", 2)


def test_missing_root_gives_nothing(tmp_path: Path) -> None:
    assert sysfs.read_functions(tmp_path / "nothing") == []


# -- robustness: every oddity is a warning on the function, never an exception --------------------


def warnings_of(root: Path, address: str) -> tuple[str, ...]:
    return by_address(root)[address].warnings


def test_broken_device_symlink(demo: FakeSysfs) -> None:
    shutil.rmtree(demo.device_dir("0000:04:00.1"))
    fn = by_address(demo.root)["0000:04:00.1"]
    assert fn.driver is None
    assert fn.warnings == ("cannot open the device directory: No such file or directory",)
    pf = by_address(demo.root)["0000:03:00.0"]
    assert pf.vf_addresses[1] == "0000:04:00.1"  # the PF still lists it


def test_device_symlink_loop(demo: FakeSysfs) -> None:
    link = demo.root / "bus/pci/devices/0000:99:00.0"
    link.symlink_to("0000:99:00.0")
    fn = by_address(demo.root)["0000:99:00.0"]
    assert fn.warnings == ("cannot open the device directory: Too many levels of symbolic links",)


def test_garbage_files(demo: FakeSysfs) -> None:
    vf = demo.device_dir("0000:04:00.0")
    (vf / "numa_node").write_text("banana\n")
    (vf / "vendor").write_text("0xzz\n")
    (vf / "class").unlink()
    (vf / "net/sim0pf0v0/type").write_text("\n")
    pf = demo.device_dir("0000:03:00.0")
    (pf / "sriov_numvfs").write_text("-3\n")
    (pf / "sriov_totalvfs").write_text("many\n")
    fns = by_address(demo.root)
    assert fns["0000:04:00.0"].warnings == (
        "vendor is not hex: '0xzz'",
        "no class file",
        "numa_node is not a number: 'banana'",
        "net/sim0pf0v0/type is not a number: ''",
    )
    assert (fns["0000:04:00.0"].numa_node, fns["0000:04:00.0"].vendor) == (None, "")
    assert fns["0000:03:00.0"].warnings == (
        "sriov_totalvfs is not a number: 'many'",
        "sriov_numvfs is negative: -3",
    )
    assert fns["0000:03:00.0"].sriov_numvfs is None


def test_broken_driver_and_iommu_links_and_loops(demo: FakeSysfs) -> None:
    vf = demo.device_dir("0000:04:00.4")
    (vf / "driver").unlink()
    (vf / "driver").symlink_to("../../../bus/pci/drivers/gone")
    (vf / "iommu_group").unlink()
    (vf / "iommu_group").mkdir()  # a directory where a link belongs
    other = demo.device_dir("0000:04:00.0")
    shutil.rmtree(other / "net")
    (other / "net").symlink_to("net")  # loop
    fns = by_address(demo.root)
    assert fns["0000:04:00.4"].driver is None
    assert fns["0000:04:00.4"].iommu_group is None
    assert fns["0000:04:00.4"].warnings == (
        "driver link is broken (-> ../../../bus/pci/drivers/gone)",
        "iommu_group is not a readable symlink: Invalid argument",
    )
    assert fns["0000:04:00.0"].netdevs == ()
    assert fns["0000:04:00.0"].warnings == ("cannot list net/: Too many levels of symbolic links",)


def test_fifo_and_directory_instead_of_files_do_not_block(demo: FakeSysfs) -> None:
    vf = demo.device_dir("0000:04:00.1")
    (vf / "numa_node").unlink()
    os.mkfifo(vf / "numa_node")
    (vf / "device").unlink()
    (vf / "device").mkdir()
    fn = by_address(demo.root)["0000:04:00.1"]
    assert fn.numa_node is None
    assert fn.device == ""
    assert "cannot read device: Is a directory" in fn.warnings
    assert "numa_node is not a number: ''" in fn.warnings


def test_missing_virtfn_link_is_a_warning(demo: FakeSysfs) -> None:
    (demo.device_dir("0000:03:00.0") / "virtfn3").unlink()
    fn = by_address(demo.root)["0000:04:00.3"]
    assert fn.vf_index is None
    assert fn.warnings == ("PF 0000:03:00.0 has no virtfnN link to this VF",)


def _warnings_as_nobody(root: Path, addresses: list[str]) -> list[str]:
    """Reads the tree in a forked child that dropped to uid/gid 65534 (root ignores DAC modes)."""

    def as_nobody() -> str:
        os.setgid(65534)
        os.setuid(65534)
        fns = {f.address: f for f in sysfs.read_functions(root)}
        return "\n".join("|".join(fns[a].warnings) for a in addresses)

    code, out = in_child(as_nobody)
    assert code == 0
    return out.split("\n")


def test_permission_denied_is_a_warning() -> None:
    top = Path(tempfile.mkdtemp(prefix="sriovdp-perm-"))
    try:
        os.chmod(top, 0o755)  # traversable by nobody
        node = demo_node(top)
        (node.device_dir("0000:04:00.2") / "numa_node").chmod(0o000)
        (node.device_dir("0000:04:00.3") / "net").chmod(0o000)
        addresses = ["0000:04:00.2", "0000:04:00.3"]
        if os.geteuid() == 0:
            got = _warnings_as_nobody(top, addresses)
        else:
            fns = by_address(top)
            got = ["|".join(fns[a].warnings) for a in addresses]
        assert got == [
            "cannot read numa_node: Permission denied",
            "cannot list net/: Permission denied",
        ]
    finally:
        shutil.rmtree(top)


def test_link_state_reads_class_net(tmp_path: Path) -> None:
    net = tmp_path / "class" / "net"
    (net / "up0").mkdir(parents=True)
    (net / "up0" / "operstate").write_text("up\n")
    (net / "up0" / "carrier").write_text("1\n")
    (net / "up0" / "ifindex").write_text("7\n")
    (net / "nocarrier0").mkdir()
    (net / "nocarrier0" / "operstate").write_text("up\n")
    (net / "nocarrier0" / "carrier").write_text("0\n")
    (net / "down0").mkdir()
    (net / "down0" / "operstate").write_text("down\n")
    (net / "bare0").mkdir()
    (net / "bare0" / "operstate").write_text("unknown\n")
    up = sysfs.link_state(tmp_path, "up0")
    assert up == LinkState("up0", 7, "UP", True, True) and up.healthy
    nocarrier = sysfs.link_state(tmp_path, "nocarrier0")
    assert nocarrier is not None and not nocarrier.healthy
    down = sysfs.link_state(tmp_path, "down0")
    assert down is not None and down.operstate == "DOWN" and not down.healthy
    bare = sysfs.link_state(tmp_path, "bare0")  # no carrier file: operstate decides
    assert bare is not None and bare.healthy
    assert sysfs.link_state(tmp_path, "absent0") is None
