"""Reading the device kinds beyond plain VFs from a fake tree shaped like the kernel's: auxiliary
devices (SFs), vDPA devices, InfiniBand pkeys, Slingshot CXI devices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sriovdp.shared import sysfs
from sriovdp.shared.model import VdpaType
from sriovdp.simnode import FakeSysfs, upstream_node


@pytest.fixture
def node(tmp_path: Path) -> FakeSysfs:
    return upstream_node(tmp_path / "sys")


def test_the_auxiliary_bus_is_shaped_like_the_kernels(node: FakeSysfs) -> None:
    root = node.root
    link = root / "bus/auxiliary/devices/mlx5_core.sf.0"
    assert link.is_symlink()
    real = link.resolve()
    # the device sits below its parent PCI function, as auxiliary_device_add() places it
    assert real == (node.device_dir("0000:03:00.0") / "mlx5_core.sf.0").resolve()
    assert (real / "driver").resolve() == (root / "bus/auxiliary/drivers/mlx5_core.sf").resolve()
    assert (root / "bus/auxiliary/drivers/mlx5_core.sf/mlx5_core.sf.0").resolve() == real
    assert (real / "sfnum").read_text() == "1\n"
    net = root / "class/net/en3f0pf0sf1"
    assert net.resolve() == (real / "net/en3f0pf0sf1").resolve()
    assert (net / "device").resolve() == real
    assert (real / "infiniband/mlx5_sf1/ports/1/pkeys/0").read_text() == "0xffff\n"
    assert not (root / "bus/auxiliary/devices/mlx5_core.sf.2/driver").exists()  # unbound


def test_aux_devices_are_read_with_their_parent(node: FakeSysfs) -> None:
    aux = {a.name: a for a in sysfs.read_aux_devices(node.root)}
    assert sorted(aux) == [
        "mlx5_core.eth.0", "mlx5_core.sf.0", "mlx5_core.sf.1", "mlx5_core.sf.2",
        "mlx5_core.sf.3", "mlx5_core.sf.4", "mlx5_core.sf.5",
    ]  # fmt: skip
    sf = aux["mlx5_core.sf.1"]
    assert (sf.aux_type, sf.index, sf.driver) == ("sf", 2, "mlx5_core.sf")
    assert (sf.parent.address, sf.parent.netdev, sf.parent.vendor) == ("0000:03:00.0", "p0", "15b3")
    assert (sf.netdevs, sf.link_type) == (("en3f0pf0sf2",), "ether")
    assert sf.rdma_devices == ("mlx5_sf2",)
    assert sf.rdma_char_devices == (
        "/dev/infiniband/issm8", "/dev/infiniband/umad8", "/dev/infiniband/uverbs8",
    )  # fmt: skip
    assert sf.pkeys == (0xFFFF,)
    unbound = aux["mlx5_core.sf.2"]
    assert (unbound.index, unbound.driver, unbound.netdevs) == (3, None, ())
    eth = aux["mlx5_core.eth.0"]
    assert (eth.aux_type, eth.index, eth.netdevs) == ("eth", 0, ())  # no sfnum: the name's id
    assert aux["mlx5_core.sf.5"].parent.address == "0000:03:00.1"
    assert all(a.warnings == () for a in aux.values())


def test_vdpa_devices_are_found_through_the_vdpa_bus(node: FakeSysfs) -> None:
    root = node.root
    link = root / "bus/vdpa/devices/vdpa0"
    assert link.resolve() == (node.device_dir("0000:5f:00.0") / "vdpa0").resolve()
    assert (link / "driver").resolve() == (root / "bus/vdpa/drivers/vhost_vdpa").resolve()
    assert (link / "vhost-vdpa-0/dev").read_text() == "509:0\n"
    fns = {f.address: f for f in sysfs.read_functions(root)}
    vhost = fns["0000:5f:00.0"].vdpa
    assert vhost is not None
    assert (vhost.name, vhost.driver, vhost.vhost_device, vhost.type) == (
        "vdpa0", "vhost_vdpa", "vhost-vdpa-0", VdpaType.VHOST,
    )  # fmt: skip
    virtio = fns["0000:5f:00.2"].vdpa
    assert virtio is not None
    assert (virtio.driver, virtio.netdevs, virtio.type) == (
        "virtio_vdpa", ("eth_vdpa2",), VdpaType.VIRTIO,
    )  # fmt: skip
    assert fns["0000:5f:00.3"].vdpa is None
    # the virtio device sits below the VF (virtio_vdpa parents it to the DMA device): its
    # netdev comes after the VF's own, which stays the VF's first netdev
    assert fns["0000:5f:00.2"].netdevs == ("enp94s0f0v2", "eth_vdpa2")
    virtio_dev = (node.root / "class/net/eth_vdpa2/device").resolve()
    assert virtio_dev.parent == node.device_dir("0000:5f:00.2").resolve()


def test_a_vdpa_device_below_an_auxiliary_device_belongs_to_its_pci_function(
    tmp_path: Path,
) -> None:
    """mlx5_vdpa puts vdpaN below ``mlx5_core.vnet.N``, itself below the VF."""
    node = FakeSysfs(tmp_path / "sys")
    (vf,) = node.add_pf("0000:01:00.0", netdev="p", vendor="15b3", num_vfs=1,
                        vf_driver="mlx5_core")  # fmt: skip
    vnet = node.device_dir(vf) / "mlx5_core.vnet.0"
    (vnet / "vdpa3").mkdir(parents=True)
    (vnet / "vdpa3/vhost-vdpa-3").mkdir()
    bus = node.root / "bus/vdpa/devices"
    bus.mkdir(parents=True)
    (bus / "vdpa3").symlink_to(os.path.relpath(vnet / "vdpa3", bus))
    (fn,) = sysfs.read_functions(node.root, [vf])
    assert fn.vdpa is not None and (fn.vdpa.name, fn.vdpa.vhost_device) == ("vdpa3", "vhost-vdpa-3")
    assert fn.vdpa.type is None  # no driver link: not bound


def test_pkeys_and_cxi_devices(node: FakeSysfs) -> None:
    fns = {f.address: f for f in sysfs.read_functions(node.root)}
    assert [fns[f"0000:3c:00.{i}"].pkeys for i in range(4)] == [
        (0x8001,), (0x8001,), (0x7FFF,), (0xFFFF,),
    ]  # fmt: skip
    assert fns["0000:c2:00.0"].cxi_devices == ("cxi1",)
    assert fns["0000:c1:00.0"].cxi_devices == ("cxi0",)
    cls = node.root / "class/cxi_user/cxi1"
    assert (cls / "device").resolve() == node.device_dir("0000:c2:00.0").resolve()
    assert fns["0000:18:00.0"].cxi_devices == () and fns["0000:18:00.0"].pkeys == ()


def test_garbage_pkey_is_a_warning(node: FakeSysfs) -> None:
    pkey = node.device_dir("0000:3c:00.0") / "infiniband/ibp59s0f0v0_ib/ports/1/pkeys/0"
    pkey.write_text("zz\n")
    (fn,) = sysfs.read_functions(node.root, ["0000:3c:00.0"])
    assert fn.pkeys == ()
    assert fn.warnings == ("infiniband/ibp59s0f0v0_ib/ports/1/pkeys/0 is not hex: 'zz'",)


def test_removing_a_pf_removes_its_sfs_and_vdpa_links(node: FakeSysfs) -> None:
    node.remove_function("0000:03:00.0")
    node.remove_function("0000:5e:00.0")
    names = sorted(a.name for a in sysfs.read_aux_devices(node.root))
    assert names == ["mlx5_core.sf.5"]
    assert sorted(os.listdir(node.root / "bus/vdpa/devices")) == []
    assert not os.path.lexists(node.root / "class/net/en3f0pf0sf1")
    assert not os.path.lexists(node.root / "class/net/eth_vdpa2")
