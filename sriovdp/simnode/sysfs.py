"""Builds fake sysfs trees shaped like the kernel's (tests, ``make demo``, benchmarks; no daemon).

Owns the fake layout, which mirrors ARCHITECTURE.md §8 and what :mod:`sriovdp.shared.sysfs` reads:

- ``<root>/devices/pci<domain>:00/<addr>/``: ``vendor``, ``device``, ``class`` (``0x``-prefixed),
  ``numa_node``, ``driver`` -> ``../../../bus/pci/drivers/<name>``, ``iommu_group`` ->
  ``../../../kernel/iommu_groups/<g>`` (whose ``name`` reads ``vfio-noiommu`` when asked), PFs:
  ``sriov_totalvfs``, ``sriov_numvfs``, ``virtfnN`` -> ``../<vf>``; VFs: ``physfn`` -> ``../<pf>``;
  ``net/<if>/{type,operstate,address}`` and ``net/<if>/device`` -> ``../../../<addr>``
  (virtio-net: ``virtio<N>/net/<if>/``, whose ``device`` is ``virtio<N>``), ``uio/uio<N>``,
  ``infiniband/<dev>``, ``infiniband_verbs/uverbs<N>``, ``infiniband_mad/{umad<N>,issm<N>}``,
  ``acpi_index``.
- ``<root>/bus/pci/devices/<addr>`` -> ``../../../devices/pci<domain>:00/<addr>``;
  ``<root>/bus/pci/drivers/<name>/<addr>`` back-links; ``<root>/class/net/<if>``,
  ``<root>/class/uio/uio<N>``, ``<root>/class/infiniband_verbs/uverbs<N>`` links.
- RDMA devices carry ``infiniband/<dev>/ports/1/pkeys/0`` (the default pkey, ``0xffff`` unless
  set), as drivers/infiniband/core/sysfs.c shows them.
- Auxiliary devices (:meth:`FakeSysfs.add_sf`; Documentation/driver-api/auxiliary_bus.rst,
  drivers/base/auxiliary.c): ``<function>/<module>.<type>.<id>/`` with ``sfnum`` (mlx5 SFs,
  mlx5/core/sf/dev/dev.c), ``driver`` -> ``bus/auxiliary/drivers/<drv>``, and their own
  ``net/`` and ``infiniband/``; linked from ``bus/auxiliary/devices/<name>``.
- vDPA devices (:meth:`FakeSysfs.add_vdpa`; drivers/vdpa/vdpa.c, vp_vdpa.c): ``<function>/vdpa<N>/``
  linked from ``bus/vdpa/devices``, ``driver`` -> ``bus/vdpa/drivers/<drv>``, with
  ``vhost-vdpa-<M>/`` (drivers/vhost/vdpa.c), or with ``<function>/virtio<K>/net/<if>/``
  (drivers/virtio/virtio_vdpa.c parents the virtio device to the DMA device, the function).
- CXI devices (:meth:`FakeSysfs.add_cxi`; HPE's cxi-driver, read by libcxi as
  ``class/cxi_user/cxi<N>/device``): ``<function>/cxi_user/cxi<N>/``.

VF addresses: VF ``i`` of the PF at ``D:BB:SS.F`` is at ``D:bb:ss.f`` with bus
``bb = BB + 1 + (SS * 8 + F)``, slot ``ss = i // 8`` and function ``f = i % 8``: every PF gets a
bus of its own for up to 256 VFs. Keep PFs on a bus with nothing else above it (e.g. PFs on bus
``01``..``03`` and nothing else on the buses after them); a computed address that is already taken
raises ValueError instead of silently sharing.

Kernel network drivers (anything but ``vfio-pci``, ``igb_uio``, ``uio_pci_generic`` and no driver)
get a netdev; a VF's is named ``<PF netdev>v<i>``. Every function gets its own iommu group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["KERNEL_NET_EXCLUDED", "FakeSysfs", "VfDriver", "vf_address"]

#: drivers that do not create a netdev
KERNEL_NET_EXCLUDED = frozenset({"vfio-pci", "igb_uio", "uio_pci_generic"})
_UIO = frozenset({"igb_uio", "uio_pci_generic"})
_LINK_TYPE_NUMBERS = {"ether": 1, "infiniband": 32}
_MAX_VFS = 256

#: a VF driver: one name (or None: unbound) for all, one per VF index, or a function of the index
VfDriver = str | None | Sequence[str | None] | Callable[[int], str | None]


def _split(address: str) -> tuple[str, int, int, int]:
    domain, bus, rest = address.split(":")
    slot, func = rest.split(".")
    return domain, int(bus, 16), int(slot, 16), int(func)


def vf_address(pf_address: str, index: int) -> str:
    """The address of VF ``index`` of the PF at ``pf_address`` (see the module docstring)."""
    domain, bus, slot, func = _split(pf_address)
    if not 0 <= index < _MAX_VFS:
        raise ValueError(f"VF index {index} out of range (0-{_MAX_VFS - 1})")
    vf_bus = bus + 1 + slot * 8 + func
    if vf_bus > 0xFF:
        raise ValueError(f"no room for VFs of {pf_address}: bus {vf_bus:#x} > 0xff")
    return f"{domain}:{vf_bus:02x}:{index // 8:02x}.{index % 8}"


def _driver_for(vf_driver: VfDriver, index: int) -> str | None:
    if vf_driver is None or isinstance(vf_driver, str):
        return vf_driver
    if callable(vf_driver):
        return vf_driver(index)
    return vf_driver[index] if index < len(vf_driver) else None


class FakeSysfs:
    """A fake sysfs tree under ``root`` (created if needed). State lives in the tree only, so a
    second instance on the same root (another process) sees and extends the same node."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._counters: dict[tuple[Path, str], int] = {}
        for sub in ("bus/pci/devices", "bus/pci/drivers", "kernel/iommu_groups", "class/net"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------------

    def device_dir(self, address: str) -> Path:
        """The real directory of a function (what ``bus/pci/devices/<addr>`` points at)."""
        return self.root / "devices" / f"pci{address.split(':', maxsplit=1)[0]}:00" / address

    def exists(self, address: str) -> bool:
        return os.path.lexists(self.root / "bus/pci/devices" / address)

    # -- building --------------------------------------------------------------------------------

    def add_function(
        self,
        address: str,
        *,
        driver: str | None = "e1000e",
        vendor: str = "8086",
        device: str = "10d3",
        pci_class: int = 0x020000,
        numa_node: int | None = 0,
        netdev: str | None = None,
        link_type: str = "ether",
        operstate: str = "up",
        virtio: bool = False,
        noiommu: bool = False,
        iommu: bool = True,
        rdma: str | None = None,
        acpi_index: str | None = None,
    ) -> str:
        """A PCI function that is not a VF: a plain NIC, an accelerator (``pci_class=0x120000``),
        a virtio-net (``virtio=True``: netdev under ``virtio<N>/net``), or bound to vfio-pci
        (``noiommu=True`` makes its group a ``vfio-noiommu`` one) or to igb_uio.

        ``netdev`` is only used with a kernel network driver. ``rdma`` names an infiniband device
        (e.g. ``"mlx5_0"``) and adds the uverbs/umad/issm entries. Returns the address.
        """
        if self.exists(address):
            raise ValueError(f"{address} already exists")
        d = self.device_dir(address)
        d.mkdir(parents=True)
        (d / "vendor").write_text(f"0x{vendor}\n")
        (d / "device").write_text(f"0x{device}\n")
        (d / "class").write_text(f"0x{pci_class:06x}\n")
        (d / "numa_node").write_text(f"{-1 if numa_node is None else numa_node}\n")
        link = self.root / "bus/pci/devices" / address
        link.symlink_to(os.path.relpath(d, link.parent))
        if iommu:
            self._add_iommu_group(address, noiommu)
        if acpi_index is not None:
            (d / "acpi_index").write_text(f"{acpi_index}\n")
        if rdma is not None:
            self._add_rdma(address, rdma)
        self.bind(
            address, driver, netdev=netdev, link_type=link_type, operstate=operstate, virtio=virtio
        )
        return address

    def add_pf(
        self,
        address: str,
        *,
        netdev: str | None = "sim0pf0",
        driver: str | None = "i40e",
        vendor: str = "8086",
        device: str = "1572",
        vf_device: str = "154c",
        numa_node: int | None = 0,
        num_vfs: int = 8,
        vf_driver: VfDriver = "iavf",
        link_type: str = "ether",
        total_vfs: int | None = None,
        rdma: bool = False,
    ) -> list[str]:
        """An SR-IOV PF with ``num_vfs`` VFs; returns the VF addresses by index.

        ``rdma=True`` gives the PF and each VF an infiniband device (``<netdev>_ib`` /
        ``<netdev>v<i>_ib``) and its char devices.
        """
        total = max(num_vfs, 8) if total_vfs is None else total_vfs
        if num_vfs > total:
            raise ValueError(f"num_vfs {num_vfs} > total_vfs {total}")
        self.add_function(
            address, driver=driver, vendor=vendor, device=device, numa_node=numa_node,
            netdev=netdev, link_type=link_type,
            rdma=f"{netdev or 'pf'}_ib" if rdma else None,
        )  # fmt: skip
        d = self.device_dir(address)
        (d / "sriov_totalvfs").write_text(f"{total}\n")
        (d / "sriov_numvfs").write_text("0\n")
        meta = {"vf_device": vf_device, "link_type": link_type, "rdma": "1" if rdma else ""}
        (d / ".simnode").write_text("\n".join(f"{k}={v}" for k, v in meta.items()) + "\n")
        return self.set_num_vfs(address, num_vfs, vf_driver=vf_driver)

    def set_num_vfs(self, pf_address: str, n: int, vf_driver: VfDriver = "iavf") -> list[str]:
        """Grows or shrinks the PF's VFs to ``n`` as the kernel would; returns all VF addresses.

        New VFs take ``vf_driver`` (indexed by their VF index); existing VFs keep theirs.
        """
        d = self.device_dir(pf_address)
        total = int((d / "sriov_totalvfs").read_text())
        if not 0 <= n <= total:
            raise ValueError(f"{n} VFs requested, {pf_address} supports 0-{total}")
        current = int((d / "sriov_numvfs").read_text())
        meta = dict(
            line.split("=", 1) for line in (d / ".simnode").read_text().splitlines() if line
        )
        pf_netdev = self._first_netdev(pf_address)
        for i in range(current - 1, n - 1, -1):
            self.remove_function(vf_address(pf_address, i))
            (d / f"virtfn{i}").unlink()
        numa = (d / "numa_node").read_text().strip()
        vendor = (d / "vendor").read_text().strip().removeprefix("0x")
        for i in range(current, n):
            vf = vf_address(pf_address, i)
            name = f"{pf_netdev}v{i}" if pf_netdev else f"vf{vf.replace(':', '').replace('.', '')}"
            self.add_function(
                vf, driver=_driver_for(vf_driver, i), vendor=vendor, device=meta["vf_device"],
                numa_node=None if numa == "-1" else int(numa), netdev=name,
                link_type=meta["link_type"], rdma=f"{name}_ib" if meta["rdma"] else None,
            )  # fmt: skip
            vd = self.device_dir(vf)
            (vd / "physfn").symlink_to(os.path.relpath(d, vd))
            (d / f"virtfn{i}").symlink_to(os.path.relpath(vd, d))
        (d / "sriov_numvfs").write_text(f"{n}\n")
        return [vf_address(pf_address, i) for i in range(n)]

    def bind(
        self,
        address: str,
        driver: str | None,
        *,
        netdev: str | None = None,
        link_type: str = "ether",
        operstate: str = "up",
        virtio: bool = False,
    ) -> None:
        """Binds ``address`` to ``driver`` (None: unbound), replacing whatever it had: the driver
        link, the netdev (kernel network drivers; needs ``netdev``), ``uio/uio<N>`` (uio drivers).
        """
        d = self.device_dir(address)
        self._unbind(address)
        if driver is None:
            return
        drv = self.root / "bus/pci/drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (d / "driver").symlink_to(os.path.relpath(drv, d))
        (drv / address).symlink_to(os.path.relpath(d, drv))
        if driver in _UIO:
            self._add_uio(address)
        elif driver not in KERNEL_NET_EXCLUDED and netdev is not None:
            self._add_netdev(address, netdev, link_type, operstate, virtio)

    def set_pkey(self, address: str, pkey: int) -> None:
        """Writes the default (index 0) pkey of port 1 of the function's RDMA devices."""
        d = self.device_dir(address) / "infiniband"
        for name in _listdir(d):
            (d / name / "ports/1/pkeys/0").write_text(f"0x{pkey:04x}\n")

    def set_operstate(self, netdev: str, state: str) -> None:
        """Writes ``operstate`` of a netdev (``up``, ``down``, ...)."""
        (self.root / "class/net" / netdev / "operstate").write_text(f"{state}\n")

    def remove_function(self, address: str) -> None:
        """Removes a function (a PF with its VFs) and every link to it, as a hot-unplug would."""
        d = self.device_dir(address)
        if (d / "sriov_numvfs").exists():
            for entry in sorted(os.listdir(d)):
                if entry.startswith("virtfn"):
                    vf = os.path.basename(os.readlink(d / entry))
                    if self.exists(vf):
                        self.remove_function(vf)
        self._unbind(address)
        group = d / "iommu_group"
        if group.is_symlink():
            shutil.rmtree(group.resolve(), ignore_errors=True)
        for sub in ("infiniband_verbs", "infiniband_mad"):
            for name in _listdir(d / sub):
                _unlink(self.root / "class" / sub / name)
        self._unlink_into(d)
        shutil.rmtree(d, ignore_errors=True)
        _unlink(self.root / "bus/pci/devices" / address)

    # -- helpers ---------------------------------------------------------------------------------

    def _first_netdev(self, address: str) -> str | None:
        names = _listdir(self.device_dir(address) / "net")
        return names[0] if names else None

    def _unbind(self, address: str) -> None:
        d = self.device_dir(address)
        drv = d / "driver"
        if drv.is_symlink():
            _unlink(drv.parent / os.readlink(drv) / address)
            drv.unlink()
        for name in _listdir(d / "net"):
            _unlink(self.root / "class/net" / name)
        for entry in _listdir(d):
            if entry.startswith("virtio"):
                for name in _listdir(d / entry / "net"):
                    _unlink(self.root / "class/net" / name)
                shutil.rmtree(d / entry)
        for name in _listdir(d / "uio"):
            _unlink(self.root / "class/uio" / name)
        shutil.rmtree(d / "net", ignore_errors=True)
        shutil.rmtree(d / "uio", ignore_errors=True)

    def _unlink_into(self, d: Path) -> None:
        """Removes every bus and class link that points into ``d`` (what the kernel removes with
        the device: its SFs, vDPA, virtio, netdev and char devices)."""
        real = os.path.realpath(d) + os.sep
        dirs = ["bus/auxiliary/devices", "bus/vdpa/devices", "bus/virtio/devices", "class/net",
                "class/cxi_user", "class/vhost-vdpa", "class/infiniband_verbs",
                "class/infiniband_mad"]  # fmt: skip
        for sub in dirs:
            for name in _listdir(self.root / sub):
                link = self.root / sub / name
                if os.path.realpath(link).startswith(real):
                    _unlink(link)

    def _next_number(self, directory: Path, prefix: str) -> int:
        """One more than the highest ``<prefix><N>`` in ``directory`` (scanned once, then counted
        here; numbers are never reused by this instance)."""
        key = (directory, prefix)
        if key not in self._counters:
            numbers = [
                int(n[len(prefix) :]) for n in _listdir(directory) if n[len(prefix) :].isdigit()
            ]
            self._counters[key] = max(numbers, default=-1) + 1
        n = self._counters[key]
        self._counters[key] = n + 1
        return n

    def _add_iommu_group(self, address: str, noiommu: bool) -> None:
        groups = self.root / "kernel/iommu_groups"
        g = groups / str(self._next_number(groups, ""))
        (g / "devices").mkdir(parents=True)
        d = self.device_dir(address)
        (g / "devices" / address).symlink_to(os.path.relpath(d, g / "devices"))
        if noiommu:
            (g / "name").write_text("vfio-noiommu\n")
        (d / "iommu_group").symlink_to(os.path.relpath(g, d))

    def _add_uio(self, address: str) -> None:
        cls = self.root / "class/uio"
        cls.mkdir(parents=True, exist_ok=True)
        name = f"uio{self._next_number(cls, 'uio')}"
        u = self.device_dir(address) / "uio" / name
        u.mkdir(parents=True)
        (u / "name").write_text("igb_uio\n")
        (cls / name).symlink_to(os.path.relpath(u, cls))

    def _add_netdev(
        self, address: str, name: str, link_type: str, operstate: str, virtio: bool
    ) -> None:
        d = self.device_dir(address)
        if virtio:
            self._add_netdev_at(self._add_virtio(d), name, link_type, operstate, address)
        else:
            self._add_netdev_at(d, name, link_type, operstate, address)

    def _add_virtio(self, parent: Path) -> Path:
        """A virtio device ``virtio<N>`` below ``parent`` (drivers/virtio/virtio.c names them)."""
        n = self._next_number(self.root / "bus/virtio/devices", "virtio")
        (self.root / "bus/virtio/devices").mkdir(parents=True, exist_ok=True)
        (self.root / "bus/virtio/devices" / f"virtio{n}").symlink_to(
            os.path.relpath(parent / f"virtio{n}", self.root / "bus/virtio/devices")
        )
        (parent / f"virtio{n}").mkdir()
        return parent / f"virtio{n}"

    def _add_netdev_at(
        self, parent: Path, name: str, link_type: str, operstate: str, seed: str
    ) -> None:
        """A netdev ``<parent>/net/<name>`` (the net class device below its parent device)."""
        net = parent / "net" / name
        if os.path.lexists(self.root / "class/net" / name):
            raise ValueError(f"netdev {name} already exists")
        net.mkdir(parents=True)
        (net / "type").write_text(f"{_LINK_TYPE_NUMBERS.get(link_type, 1)}\n")
        (net / "operstate").write_text(f"{operstate}\n")
        digest = sum(seed.encode()) * 2654435761 & 0xFFFFFFFFFF
        mac = ":".join(f"{b:02x}" for b in (0x02, *digest.to_bytes(5, "big")))
        (net / "address").write_text(f"{mac}\n")
        (net / "device").symlink_to(f"../../../{parent.name}")
        (self.root / "class/net" / name).symlink_to(os.path.relpath(net, self.root / "class/net"))

    def _add_rdma(self, address: str, name: str, pkey: int = 0xFFFF) -> None:
        self._add_rdma_at(self.device_dir(address), name, pkey)

    def _add_rdma_at(self, d: Path, name: str, pkey: int = 0xFFFF) -> None:
        """An RDMA device below ``d`` as the RDMA core makes it (drivers/infiniband/core/
        device.c, sysfs.c): ``infiniband/<name>/ports/1/pkeys/0`` (the default pkey, hex),
        and the uverbs/umad/issm char devices beside it with their class links."""
        port = d / "infiniband" / name / "ports" / "1"
        (port / "pkeys").mkdir(parents=True)
        (port / "pkeys" / "0").write_text(f"0x{pkey:04x}\n")
        verbs = self.root / "class/infiniband_verbs"
        mad = self.root / "class/infiniband_mad"
        verbs.mkdir(parents=True, exist_ok=True)
        mad.mkdir(parents=True, exist_ok=True)
        n = self._next_number(verbs, "uverbs")
        entries = [("infiniband_verbs", f"uverbs{n}"), ("infiniband_mad", f"umad{n}"),
                   ("infiniband_mad", f"issm{n}")]  # fmt: skip
        for sub, entry in entries:
            e = d / sub / entry
            e.mkdir(parents=True)
            (e / "ibdev").write_text(f"{name}\n")
            cls = self.root / "class" / sub
            (cls / entry).symlink_to(os.path.relpath(e, cls))

    # -- auxiliary devices, vDPA, CXI ------------------------------------------------------------

    def add_sf(
        self,
        parent: str,
        sfnum: int,
        *,
        netdev: str | None,
        rdma: str | None = None,
        driver: str | None = "mlx5_core.sf",
        link_type: str = "ether",
        operstate: str = "up",
        aux_type: str = "sf",
        module: str = "mlx5_core",
    ) -> str:
        """An auxiliary device ``<module>.<aux_type>.<id>`` below the PCI function ``parent``, as
        the auxiliary bus names it (Documentation/driver-api/auxiliary_bus.rst,
        drivers/base/auxiliary.c: ``bus/auxiliary/devices/<name>`` links to it, ``driver`` to
        ``bus/auxiliary/drivers/<drv>``); an mlx5 SF carries ``sfnum``
        (drivers/net/ethernet/mellanox/mlx5/core/sf/dev/dev.c). With a driver it gets the netdev
        ``netdev`` and, with ``rdma``, an RDMA device, both below it. The ``<id>`` is the bus's
        next free number, as the kernel's IDA hands them out. Returns the name.
        """
        bus = self.root / "bus/auxiliary/devices"
        bus.mkdir(parents=True, exist_ok=True)
        number = self._next_number(bus, f"{module}.{aux_type}.")
        name = f"{module}.{aux_type}.{number}"
        d = self.device_dir(parent) / name
        d.mkdir()
        if aux_type == "sf":
            (d / "sfnum").write_text(f"{sfnum}\n")
        (bus / name).symlink_to(os.path.relpath(d, bus))
        if driver is not None:
            drv = self.root / "bus/auxiliary/drivers" / driver
            drv.mkdir(parents=True, exist_ok=True)
            (d / "driver").symlink_to(os.path.relpath(drv, d))
            (drv / name).symlink_to(os.path.relpath(d, drv))
            if netdev is not None:
                self._add_netdev_at(d, netdev, link_type, operstate, name)
            if rdma is not None:
                self._add_rdma_at(d, rdma)
        return name

    def add_vdpa(self, address: str, driver: str | None, *, netdev: str | None = None) -> str:
        """A vDPA device ``vdpa<N>`` whose parent is the function at ``address`` (as vp_vdpa
        makes it, drivers/vdpa/virtio_pci/vp_vdpa.c), linked from ``bus/vdpa/devices``. Bound
        to ``vhost_vdpa`` it gets the char device ``vhost-vdpa-<M>`` below it
        (drivers/vhost/vdpa.c); to ``virtio_vdpa`` a ``virtio<K>`` device with the netdev
        ``netdev``, below the function (drivers/virtio/virtio_vdpa.c: the virtio device's
        parent is the vDPA device's DMA device). Returns the vDPA device's name.
        """
        bus = self.root / "bus/vdpa/devices"
        bus.mkdir(parents=True, exist_ok=True)
        name = f"vdpa{self._next_number(bus, 'vdpa')}"
        d = self.device_dir(address) / name
        d.mkdir()
        (bus / name).symlink_to(os.path.relpath(d, bus))
        if driver is None:
            return name
        drv = self.root / "bus/vdpa/drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (d / "driver").symlink_to(os.path.relpath(drv, d))
        (drv / name).symlink_to(os.path.relpath(d, drv))
        if driver == "vhost_vdpa":
            cls = self.root / "class/vhost-vdpa"
            cls.mkdir(parents=True, exist_ok=True)
            m = self._next_number(cls, "vhost-vdpa-")
            v = d / f"vhost-vdpa-{m}"
            v.mkdir()
            (v / "dev").write_text(f"509:{m}\n")
            (cls / v.name).symlink_to(os.path.relpath(v, cls))
        elif driver == "virtio_vdpa" and netdev is not None:
            # virtio_vdpa_probe() makes the virtio device a child of the vDPA device's DMA
            # device, which for hardware vDPA is the PCI function itself
            parent = self.device_dir(address)
            self._add_netdev_at(self._add_virtio(parent), netdev, "ether", "up", name)
        return name

    def add_cxi(self, address: str) -> str:
        """A Slingshot CXI device ``cxi<N>`` below the function at ``address``: the class
        device libcxi reads as ``/sys/class/cxi_user/cxi<N>/device`` (HPE's cxi-driver), with
        its char device ``/dev/cxi<N>``. Returns ``cxi<N>``."""
        cls = self.root / "class/cxi_user"
        cls.mkdir(parents=True, exist_ok=True)
        name = f"cxi{self._next_number(cls, 'cxi')}"
        c = self.device_dir(address) / "cxi_user" / name
        c.mkdir(parents=True)
        (c / "dev").write_text(f"238:{name[3:]}\n")
        (c / "device").symlink_to("../..")
        (cls / name).symlink_to(os.path.relpath(c, cls))
        return name


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
