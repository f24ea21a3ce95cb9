"""Reads PCI functions from a sysfs tree (CLI ``discover``, plugin workers, supervisor).

Owns the knowledge of the kernel's sysfs layout for PCI devices (ARCHITECTURE.md §8) and nothing
else: the tree is rooted at a configurable ``root`` (``/sys`` on a node, a fake tree in tests), and
every function under ``<root>/bus/pci/devices`` becomes a :class:`PciFunction`.

Robustness: nothing found in the tree raises out of :func:`read_functions`. An unreadable or odd
entry (broken or looping symlink, missing file, garbage content, permission denied) becomes a
warning on that function; a function whose directory cannot be listed at all is still returned,
with no driver and a warning, so callers can show it.

Speed: one ``os.scandir`` per function directory tells which entries exist, so only files that are
there are opened; links are read with ``os.readlink`` (no path resolution); iommu group names are
read once per group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sriovdp.shared.model import PciFunction

__all__ = ["ARPHRD_NAMES", "operstate", "read_function_addresses", "read_functions"]

#: ``net/<if>/type`` (ARPHRD_*) -> link type name used by ``linkTypes`` selectors
ARPHRD_NAMES = {1: "ether", 32: "infiniband", 772: "loopback", 65534: "none"}

_RDMA_CHAR_DIRS = ("infiniband_verbs", "infiniband_mad")
_VFIO_DRIVERS = frozenset({"vfio-pci"})


@dataclass
class _Raw:
    """What one function's own directory says, before PF/VF relations are resolved."""

    address: str
    vendor: str = ""
    device: str = ""
    pci_class: int = 0
    driver: str | None = None
    numa_node: int | None = None
    iommu_group: str | None = None
    iommu_noiommu: bool = False
    physfn: str | None = None
    virtfns: dict[int, str] = field(default_factory=dict)
    netdevs: tuple[str, ...] = ()
    link_type: str | None = None
    uio: tuple[str, ...] = ()
    rdma: tuple[str, ...] = ()
    rdma_char: tuple[str, ...] = ()
    acpi_index: str | None = None
    totalvfs: int | None = None
    numvfs: int | None = None
    warnings: list[str] = field(default_factory=list)


_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block discovery


def _read(path: str, dir_fd: int | None = None) -> str:
    fd = os.open(path, _OPEN_FLAGS, dir_fd=dir_fd)
    try:
        return os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def _list(path: str, dir_fd: int | None = None) -> list[str]:
    fd = os.open(path, _OPEN_FLAGS | os.O_DIRECTORY, dir_fd=dir_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


class _Reader:
    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.devices = os.path.join(self.root, "bus", "pci", "devices")
        self.group_noiommu: dict[str, bool] = {}

    def addresses(self) -> list[str]:
        try:
            return sorted(os.listdir(self.devices))
        except OSError:
            return []

    def function(self, address: str) -> _Raw:
        raw = _Raw(address)
        try:
            base = os.open(os.path.join(self.devices, address), _OPEN_FLAGS | os.O_DIRECTORY)
        except OSError as exc:
            raw.warnings.append(f"cannot open the device directory: {_why(exc)}")
            return raw
        try:
            self.fill(raw, base)
        finally:
            os.close(base)
        return raw

    def fill(self, raw: _Raw, base: int) -> None:
        """Reads one function's entries, relative to its open directory ``base``."""
        try:
            names = set(os.listdir(base))
        except OSError as exc:
            raw.warnings.append(f"cannot list the device directory: {_why(exc)}")
            return
        raw.vendor = self.hex_id(raw, base, "vendor", names)
        raw.device = self.hex_id(raw, base, "device", names)
        raw.pci_class = self.pci_class(raw, base, names)
        raw.numa_node = self.numa(raw, base, names)
        raw.driver = self.link_name(raw, base, "driver", names, check_target=True)
        group = self.link_name(raw, base, "iommu_group", names)
        if group is not None:
            raw.iommu_group = group
            if raw.driver in _VFIO_DRIVERS:  # only vfio cares; saves a read per function
                raw.iommu_noiommu = self.noiommu(raw, base, group)
        if "physfn" in names:
            raw.physfn = self.link_name(raw, base, "physfn", names)
        if "sriov_totalvfs" in names:
            raw.totalvfs = self.integer(raw, base, "sriov_totalvfs")
            raw.numvfs = self.integer(raw, base, "sriov_numvfs")
            for name in names:
                if name.startswith("virtfn") and name[6:].isdecimal():
                    target = self.link_name(raw, base, name, names)
                    if target is not None:
                        raw.virtfns[int(name[6:])] = target
        raw.netdevs = self.netdevs(raw, base, names)
        if raw.netdevs:
            raw.link_type = self.link_type(raw, base, raw.netdevs[0], names)
        if "uio" in names:
            raw.uio = self.listing(raw, base, "uio")
        if "infiniband" in names:
            raw.rdma = self.listing(raw, base, "infiniband")
            chars: list[str] = []
            for sub in _RDMA_CHAR_DIRS:
                if sub in names:
                    listed = self.listing(raw, base, sub)
                    chars.extend(f"/dev/infiniband/{n}" for n in listed)
            raw.rdma_char = tuple(sorted(chars))
        if "acpi_index" in names:
            raw.acpi_index = self.text(raw, base, "acpi_index")
        elif "firmware_node" in names and _exists("firmware_node/acpi_index", base):
            raw.acpi_index = self.text(raw, base, os.path.join("firmware_node", "acpi_index"))

    # -- single entries ---------------------------------------------------------------------------

    def text(self, raw: _Raw, base: int, name: str) -> str | None:
        try:
            return _read(name, base)
        except OSError as exc:
            raw.warnings.append(f"cannot read {name}: {_why(exc)}")
            return None

    def hex_id(self, raw: _Raw, base: int, name: str, names: set[str]) -> str:
        if name not in names:
            raw.warnings.append(f"no {name} file")
            return ""
        value = self.text(raw, base, name)
        if value is None:
            return ""
        bare = value.lower().removeprefix("0x")
        try:
            int(bare, 16)
        except ValueError:
            raw.warnings.append(f"{name} is not hex: {value!r}")
            return ""
        return bare

    def pci_class(self, raw: _Raw, base: int, names: set[str]) -> int:
        if "class" not in names:
            raw.warnings.append("no class file")
            return 0
        value = self.text(raw, base, "class")
        if value is None:
            return 0
        try:
            return int(value, 16)
        except ValueError:
            raw.warnings.append(f"class is not hex: {value!r}")
            return 0

    def numa(self, raw: _Raw, base: int, names: set[str]) -> int | None:
        if "numa_node" not in names:
            return None
        value = self.text(raw, base, "numa_node")
        if value is None:
            return None
        try:
            node = int(value)
        except ValueError:
            raw.warnings.append(f"numa_node is not a number: {value!r}")
            return None
        return node if node >= 0 else None

    def integer(self, raw: _Raw, base: int, name: str) -> int | None:
        value = self.text(raw, base, name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raw.warnings.append(f"{name} is not a number: {value!r}")
            return None
        if number < 0:
            raw.warnings.append(f"{name} is negative: {number}")
            return None
        return number

    def link_name(
        self, raw: _Raw, base: int, name: str, names: set[str], check_target: bool = False
    ) -> str | None:
        """The basename of a symlink's target; None (with a warning if odd) otherwise."""
        if name not in names:
            return None
        try:
            target = os.readlink(name, dir_fd=base)
        except OSError as exc:
            raw.warnings.append(f"{name} is not a readable symlink: {_why(exc)}")
            return None
        result = os.path.basename(target.rstrip("/"))
        if not result:
            raw.warnings.append(f"{name} link has an empty target")
            return None
        if check_target and not _exists(name, base):
            raw.warnings.append(f"{name} link is broken (-> {target})")
            return None
        return result

    def noiommu(self, raw: _Raw, base: int, group: str) -> bool:
        if group not in self.group_noiommu:
            try:
                name = _read("iommu_group/name", base)
            except FileNotFoundError:
                name = ""
            except OSError as exc:
                raw.warnings.append(f"cannot read iommu_group/name: {_why(exc)}")
                name = ""
            self.group_noiommu[group] = name == "vfio-noiommu"
        return self.group_noiommu[group]

    def listing(self, raw: _Raw, base: int, path: str) -> tuple[str, ...]:
        try:
            return tuple(sorted(_list(path, base)))
        except OSError as exc:
            raw.warnings.append(f"cannot list {path}/: {_why(exc)}")
            return ()

    def netdevs(self, raw: _Raw, base: int, names: set[str]) -> tuple[str, ...]:
        found: list[str] = []
        if "net" in names:
            found.extend(self.listing(raw, base, "net"))
        for name in sorted(names):
            if name.startswith("virtio") and name[6:].isdecimal():
                net = f"{name}/net"
                if _exists(net, base):
                    found.extend(self.listing(raw, base, net))
        return tuple(found)

    def link_type(self, raw: _Raw, base: int, netdev: str, names: set[str]) -> str | None:
        candidates = [f"net/{netdev}/type"]
        candidates += [f"{n}/net/{netdev}/type" for n in sorted(names) if n.startswith("virtio")]
        for path in candidates:
            try:
                value = _read(path, base)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raw.warnings.append(f"cannot read net/{netdev}/type: {_why(exc)}")
                return None
            try:
                number = int(value)
            except ValueError:
                raw.warnings.append(f"net/{netdev}/type is not a number: {value!r}")
                return None
            return ARPHRD_NAMES.get(number, f"arphrd-{number}")
        raw.warnings.append(f"no net/{netdev}/type")
        return None


def _exists(path: str, dir_fd: int) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd)
    except (OSError, ValueError):
        return False
    return True


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def read_function_addresses(root: Path) -> list[str]:
    """The PCI addresses listed under ``<root>/bus/pci/devices``, sorted."""
    return _Reader(root).addresses()


def read_functions(root: Path, addresses: list[str] | None = None) -> list[PciFunction]:
    """Every PCI function under ``<root>/bus/pci/devices`` (or just ``addresses``), sorted.

    VFs get their PF's address, first netdev name and their index (the ``N`` of the PF's
    ``virtfnN`` link); when the PF was not asked for, it is read for that purpose.
    """
    reader = _Reader(root)
    wanted = reader.addresses() if addresses is None else sorted(set(addresses))
    raws = {a: reader.function(a) for a in wanted}
    pfs: dict[str, _Raw] = dict(raws)
    for raw in list(raws.values()):
        if raw.physfn is not None and raw.physfn not in pfs:
            pfs[raw.physfn] = reader.function(raw.physfn)
    vf_index: dict[str, tuple[str, int]] = {}
    for pf in pfs.values():
        for n, vf in pf.virtfns.items():
            vf_index[vf] = (pf.address, n)
    out: list[PciFunction] = []
    for raw in raws.values():
        pf_address = pf_name = vf_idx = None
        if raw.physfn is not None:
            pf_address = raw.physfn
            pf = pfs[raw.physfn]
            pf_name = pf.netdevs[0] if pf.netdevs else None
            link = vf_index.get(raw.address)
            if link is None or link[0] != pf_address:
                raw.warnings.append(f"PF {pf_address} has no virtfnN link to this VF")
            else:
                vf_idx = link[1]
        vf_addresses = tuple(raw.virtfns[n] for n in sorted(raw.virtfns))
        out.append(
            PciFunction(
                address=raw.address,
                vendor=raw.vendor,
                device=raw.device,
                pci_class=raw.pci_class,
                driver=raw.driver,
                numa_node=raw.numa_node,
                iommu_group=raw.iommu_group,
                iommu_noiommu=raw.iommu_noiommu,
                pf_address=pf_address,
                pf_name=pf_name,
                vf_index=vf_idx,
                netdevs=raw.netdevs,
                link_type=raw.link_type,
                uio_devices=raw.uio,
                rdma_devices=raw.rdma,
                rdma_char_devices=raw.rdma_char,
                acpi_index=raw.acpi_index,
                sriov_totalvfs=raw.totalvfs,
                sriov_numvfs=raw.numvfs,
                vf_addresses=vf_addresses,
                warnings=tuple(raw.warnings),
            )
        )
    return out


def operstate(root: Path, function: PciFunction) -> str | None:
    """The operstate (``up``, ``down``, ...) of the function's first netdev; None if unknown."""
    if function.netdev is None:
        return None
    base = os.path.join(str(root), "bus", "pci", "devices", function.address)
    candidates = [os.path.join(base, "net", function.netdev, "operstate")]
    try:
        candidates += [
            os.path.join(base, n, "net", function.netdev, "operstate")
            for n in sorted(os.listdir(base))
            if n.startswith("virtio")
        ]
    except OSError:
        return None
    for path in candidates:
        try:
            return _read(path)
        except OSError:
            continue
    return None
