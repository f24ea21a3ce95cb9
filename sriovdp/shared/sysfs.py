"""Reads PCI functions from a sysfs tree (CLI ``discover``, plugin workers, supervisor).

Owns the knowledge of the kernel's sysfs layout for PCI devices (ARCHITECTURE.md §8) and nothing
else: the tree is rooted at a configurable ``root`` (``/sys`` on a node, a fake tree in tests), and
every function under ``<root>/bus/pci/devices`` becomes a :class:`PciFunction`.

Robustness: nothing found in the tree raises out of :func:`read_functions`. An unreadable or odd
entry (broken or looping symlink, missing file, garbage content, permission denied) becomes a
warning on that function; a function whose directory cannot be listed at all is still returned,
with no driver and a warning, so callers can show it.

Speed: one ``os.listdir`` per function directory tells which entries exist, so only files that are
there are opened; links are read with ``os.readlink`` (no path resolution); iommu group names are
read once per group. A caller that needs only some functions says so: :class:`Reader` reads each
function at most once and finds a PF's VFs through its ``virtfnN`` links and a netdev's PCI
device through ``class/net/<name>`` (:meth:`Reader.pfs_with_netdev`), so a plugin worker whose pool
names its PFs never lists the bus; ``keep`` (:meth:`Reader.functions`) drops a function after its
cheap entries (vendor, device, class, numa node, driver) without reading the rest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sriovdp.shared.messages import LinkState
from sriovdp.shared.model import AuxDevice, PciFunction, VdpaDevice

__all__ = [
    "ARPHRD_NAMES",
    "Basics",
    "Reader",
    "operstate",
    "read_aux_devices",
    "read_function_addresses",
    "read_functions",
]

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
    has_physfn: bool = False  # the directory lists a physfn entry (readable or not)
    virtfns: dict[int, str] = field(default_factory=dict)
    netdevs: tuple[str, ...] = ()
    link_type: str | None = None
    uio: tuple[str, ...] = ()
    rdma: tuple[str, ...] = ()
    rdma_char: tuple[str, ...] = ()
    pkeys: tuple[int, ...] = ()
    cxi: tuple[str, ...] = ()
    acpi_index: str | None = None
    totalvfs: int | None = None
    numvfs: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Basics:
    """A function's cheap entries, read first; what a ``keep`` predicate decides on.

    The values are exactly what the full read would give (``vendor``/``device``/``pci_class``
    as :class:`PciFunction` has them, ``driver`` None when unbound or the link is broken);
    ``maybe_vf``: the directory has a ``physfn`` entry (every VF has one).
    """

    address: str
    vendor: str
    device: str
    pci_class: int
    driver: str | None
    maybe_vf: bool


Keep = Callable[[Basics], bool]

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

    def function(self, address: str, keep: Keep | None = None) -> _Raw | None:
        """Reads one function; None when ``keep`` said no after the cheap entries."""
        raw = _Raw(address)
        try:
            base = os.open(os.path.join(self.devices, address), _OPEN_FLAGS | os.O_DIRECTORY)
        except OSError as exc:
            raw.warnings.append(f"cannot open the device directory: {_why(exc)}")
            return raw if keep is None or keep(_basics(raw)) else None
        try:
            kept = self.fill(raw, base, keep)
        finally:
            os.close(base)
        return raw if kept else None

    def fill(self, raw: _Raw, base: int, keep: Keep | None = None) -> bool:
        """Reads one function's entries, relative to its open directory ``base``.

        The cheap entries come first, in the order their warnings are listed; then ``keep``
        (if given) decides whether the rest is read. Returns whether the function is kept.
        """
        try:
            names = set(os.listdir(base))
        except OSError as exc:
            raw.warnings.append(f"cannot list the device directory: {_why(exc)}")
            return keep is None or keep(_basics(raw))
        raw.vendor = self.hex_id(raw, base, "vendor", names)
        raw.device = self.hex_id(raw, base, "device", names)
        raw.pci_class = self.pci_class(raw, base, names)
        raw.numa_node = self.numa(raw, base, names)
        raw.driver = self.link_name(raw, base, "driver", names, check_target=True)
        raw.has_physfn = "physfn" in names
        if keep is not None and not keep(_basics(raw)):
            return False
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
            for name in sorted(names):
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
            self.rdma(raw, base, names)
        if "cxi_user" in names:
            raw.cxi = self.listing(raw, base, "cxi_user")
        if "acpi_index" in names:
            raw.acpi_index = self.text(raw, base, "acpi_index")
        elif "firmware_node" in names and _exists("firmware_node/acpi_index", base):
            raw.acpi_index = self.text(raw, base, os.path.join("firmware_node", "acpi_index"))
        return True

    def rdma(self, raw: _Raw, base: int, names: set[str]) -> None:
        """RDMA devices, their char devices and the index-0 pkey of every port.

        The layout is the RDMA core's (drivers/infiniband/core/sysfs.c, device.c): the ib_device
        ``infiniband/<dev>/`` with ``ports/<n>/pkeys/<index>`` (hex, ``0xffff``) under its parent,
        and the uverbs/umad class devices beside it.
        """
        raw.rdma = self.listing(raw, base, "infiniband")
        chars: list[str] = []
        for sub in _RDMA_CHAR_DIRS:
            if sub in names:
                listed = self.listing(raw, base, sub)
                chars.extend(f"/dev/infiniband/{n}" for n in listed)
        raw.rdma_char = tuple(sorted(chars))
        pkeys: list[int] = []
        for dev in raw.rdma:
            ports = f"infiniband/{dev}/ports"
            if not _exists(ports, base):
                continue
            for port in self.listing(raw, base, ports):
                text = self.text(raw, base, f"{ports}/{port}/pkeys/0")
                if text is None:
                    continue
                try:
                    pkeys.append(int(text, 16))
                except ValueError:
                    raw.warnings.append(f"{ports}/{port}/pkeys/0 is not hex: {text!r}")
        raw.pkeys = tuple(pkeys)

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


def _basics(raw: _Raw) -> Basics:
    return Basics(raw.address, raw.vendor, raw.device, raw.pci_class, raw.driver, raw.has_physfn)


def _exists(path: str, dir_fd: int | None = None) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd)
    except (OSError, ValueError):
        return False
    return True


def _listdir_or_empty(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


class Reader:
    """Reads one sysfs tree for one answer: each function's directory is read at most once.

    ``opened`` lists every function directory read, in order (tests use it to prove a reading
    stayed within its candidates).
    """

    def __init__(self, root: Path) -> None:
        self._reader = _Reader(root)
        self._full: dict[str, _Raw] = {}
        self._vdpa: dict[str, VdpaDevice] | None = None
        self.opened: list[str] = []

    def vdpa_devices(self) -> dict[str, VdpaDevice]:
        """PCI address -> the vDPA device on top of that function (one listing of the bus).

        ``bus/vdpa/devices/vdpaN`` links to the vDPA device, which sits below its parent: the PCI
        function itself (vp_vdpa, drivers/vdpa/virtio_pci/vp_vdpa.c) or an auxiliary device of
        it (mlx5_vdpa on ``mlx5_core.vnet.N``); the nearest PCI address in the path is the
        function. Bound to vhost_vdpa, it has a ``vhost-vdpa-N`` child (drivers/vhost/vdpa.c,
        the name of its /dev node); bound to virtio_vdpa, a ``virtioN`` device with ``net/<if>``
        appears below its DMA device, the PCI function for hardware vDPA, or below the vDPA
        device for software ones (drivers/virtio/virtio_vdpa.c).
        """
        if self._vdpa is not None:
            return self._vdpa
        found: dict[str, VdpaDevice] = {}
        bus = os.path.join(self._reader.root, "bus", "vdpa", "devices")
        try:
            names = sorted(os.listdir(bus))
        except OSError:
            names = []
        for name in names:
            real = os.path.realpath(os.path.join(bus, name))
            parent = next(
                (p for p in reversed(real.split(os.sep)[:-1]) if _PCI_ADDRESS.match(p)), None
            )
            if parent is None or parent in found:
                continue
            try:
                driver: str | None = os.path.basename(os.readlink(os.path.join(real, "driver")))
            except OSError:
                driver = None
            children = _listdir_or_empty(real)
            vhost = next((c for c in children if c.startswith("vhost-vdpa-")), None)
            netdevs: list[str] = []
            if driver == "virtio_vdpa":
                parts = real.split(os.sep)
                function = os.sep.join(parts[: len(parts) - parts[::-1].index(parent)])
                for where in (real, function):
                    for child in _listdir_or_empty(where):
                        if child.startswith("virtio") and child[6:].isdecimal():
                            netdevs.extend(_listdir_or_empty(os.path.join(where, child, "net")))
            found[parent] = VdpaDevice(name, driver, vhost, tuple(netdevs))
        self._vdpa = found
        return found

    def aux_devices(self, keep: Callable[[str], bool] | None = None) -> list[AuxDevice]:
        """Every auxiliary device (``bus/auxiliary/devices/<driver>.<type>.<id>``), sorted.

        The layout is the auxiliary bus's (Documentation/driver-api/auxiliary_bus.rst,
        drivers/base/auxiliary.c): the device sits below its parent PCI function, its name is
        ``<module>.<type>.<id>``; an mlx5 SF has ``sfnum`` (mlx5/core/sf/dev/dev.c), and the
        netdev and RDMA device a driver bound to it creates sit below it as for a PCI function.
        ``keep``: called with the name before anything else is read.
        """
        bus = os.path.join(self._reader.root, "bus", "auxiliary", "devices")
        try:
            names = sorted(os.listdir(bus))
        except OSError:
            return []
        out: list[AuxDevice] = []
        for name in names:
            parts = name.split(".")
            if len(parts) != 3 or not parts[2].isdecimal():
                continue
            if keep is not None and not keep(name):
                continue
            real = os.path.realpath(os.path.join(bus, name))
            parent = os.path.basename(os.path.dirname(real))
            if not _PCI_ADDRESS.match(parent):
                continue
            parents = self.functions([parent])
            if not parents:
                continue
            out.append(self._aux(name, parts[1], int(parts[2]), real, parents[0]))
        return out

    def _aux(
        self, name: str, aux_type: str, number: int, real: str, parent: PciFunction
    ) -> AuxDevice:
        raw = _Raw(name)
        try:
            base = os.open(real, _OPEN_FLAGS | os.O_DIRECTORY)
        except OSError as exc:
            why = f"cannot open the device directory: {_why(exc)}"
            return AuxDevice(name, aux_type, number, parent, None, warnings=(why,))
        try:
            names = set(os.listdir(base))
            driver = self._reader.link_name(raw, base, "driver", names, check_target=True)
            index = number
            if "sfnum" in names:
                index = self._reader.integer(raw, base, "sfnum") or 0
            netdevs = self._reader.netdevs(raw, base, names)
            link_type = self._reader.link_type(raw, base, netdevs[0], names) if netdevs else None
            if "infiniband" in names:
                self._reader.rdma(raw, base, names)
        finally:
            os.close(base)
        return AuxDevice(
            name=name,
            aux_type=aux_type,
            index=index,
            parent=parent,
            driver=driver,
            netdevs=netdevs,
            link_type=link_type,
            rdma_devices=raw.rdma,
            rdma_char_devices=raw.rdma_char,
            pkeys=raw.pkeys,
            warnings=tuple(raw.warnings),
        )

    def addresses(self) -> list[str]:
        """Every PCI address under ``bus/pci/devices``, sorted (one listing of the bus)."""
        return self._reader.addresses()

    def _raw(self, address: str) -> _Raw:
        raw = self._full.get(address)
        if raw is None:
            self.opened.append(address)
            raw = self._reader.function(address)
            assert raw is not None  # no keep: always read in full
            self._full[address] = raw
        return raw

    def virtfns(self, pf_address: str) -> dict[int, str]:
        """The PF's ``virtfnN`` links: VF index -> VF address (empty for a non-PF or no VFs)."""
        return dict(self._raw(pf_address).virtfns)

    def pfs_with_netdev(self, names: Iterable[str]) -> dict[str, set[str]]:
        """For each name, case-folded (``pfNames`` compares names case-insensitively): the PCI
        addresses of the functions that have a netdev of that name.

        From ``class/net/<if>/device`` (the kernel's link from a netdev to its device; for a
        virtio netdev that is the virtio device, whose parent is the PCI function). Without a
        readable ``class/net`` directory, the SR-IOV PFs of the bus (functions with
        ``sriov_totalvfs``) are read instead: a name that is no PF's netdev cannot select VFs.
        """
        found: dict[str, set[str]] = {n.casefold(): set() for n in names}
        if not found:
            return found
        cls = os.path.join(self._reader.root, "class", "net")
        try:
            entries = os.listdir(cls)
        except OSError:
            for address in self.addresses():
                if not _exists(os.path.join(self._reader.devices, address, "sriov_totalvfs")):
                    continue
                for netdev in self._raw(address).netdevs:
                    if netdev.casefold() in found:
                        found[netdev.casefold()].add(address)
            return found
        for entry in entries:
            if entry.casefold() in found:
                device = self._netdev_address(os.path.join(cls, entry))
                if device is not None:
                    found[entry.casefold()].add(device)
        return found

    def _netdev_address(self, link: str) -> str | None:
        device = os.path.realpath(os.path.join(link, "device"))
        if not os.path.isdir(device):  # no device link: the netdev's own dir is <device>/net/<if>
            device = os.path.dirname(os.path.dirname(os.path.realpath(link)))
        for _ in range(2):  # a virtio netdev's device is virtio<N>, under the PCI function
            name = os.path.basename(device)
            if _PCI_ADDRESS.match(name):
                return name
            device = os.path.dirname(device)
        return None

    def _driver_in(self, address: str, drivers: Collection[str]) -> bool:
        """Whether the function's driver link names one of ``drivers`` (one readlink)."""
        try:
            target = os.readlink(os.path.join(self._reader.devices, address, "driver"))
        except OSError:
            return False  # unbound, or its directory unreadable: no driver either way
        return os.path.basename(target.rstrip("/")) in drivers

    def functions(
        self,
        addresses: Iterable[str] | None = None,
        keep: Keep | None = None,
        drivers: Collection[str] | None = None,
    ) -> list[PciFunction]:
        """Every function of the bus (or just those of ``addresses`` that exist), sorted by
        address.

        ``keep``: called with each function's :class:`Basics`; a function it refuses is neither
        read further nor returned. ``drivers``: only functions bound to one of these are
        wanted; others are left after one ``readlink`` of their ``driver`` link.

        VFs get their PF's address, first netdev name and their index (the ``N`` of the PF's
        ``virtfnN`` link); their PF is read for that, whether or not it was asked for or kept.
        """
        wanted = self.addresses() if addresses is None else sorted(set(addresses))
        raws: list[_Raw] = []
        for address in wanted:
            if address in self._full:
                cached = self._full[address]
                if keep is None or keep(_basics(cached)):
                    raws.append(cached)
                continue
            if drivers is not None and not self._driver_in(address, drivers):
                continue
            if addresses is not None and not os.path.lexists(
                os.path.join(self._reader.devices, address)
            ):
                continue  # a named function that is not on the node is not one
            self.opened.append(address)
            raw = self._reader.function(address, keep)
            if raw is not None:
                if keep is None:
                    self._full[address] = raw
                raws.append(raw)
        return [self._function(raw) for raw in raws]

    def _function(self, raw: _Raw) -> PciFunction:
        pf_address = pf_name = vf_idx = None
        warnings = list(raw.warnings)
        if raw.physfn is not None:
            pf_address = raw.physfn
            pf = self._raw(pf_address)
            pf_name = pf.netdevs[0] if pf.netdevs else None
            vf_idx = next((n for n in sorted(pf.virtfns) if pf.virtfns[n] == raw.address), None)
            if vf_idx is None:
                warnings.append(f"PF {pf_address} has no virtfnN link to this VF")
        return PciFunction(
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
            pkeys=raw.pkeys,
            vdpa=self.vdpa_devices().get(raw.address),
            cxi_devices=raw.cxi,
            acpi_index=raw.acpi_index,
            sriov_totalvfs=raw.totalvfs,
            sriov_numvfs=raw.numvfs,
            vf_addresses=tuple(raw.virtfns[n] for n in sorted(raw.virtfns)),
            warnings=tuple(warnings),
        )


def read_function_addresses(root: Path) -> list[str]:
    """The PCI addresses listed under ``<root>/bus/pci/devices``, sorted."""
    return _Reader(root).addresses()


def read_aux_devices(root: Path) -> list[AuxDevice]:
    """Every auxiliary device of the tree (see :meth:`Reader.aux_devices`)."""
    return Reader(root).aux_devices()


def read_functions(
    root: Path, addresses: Iterable[str] | None = None, keep: Keep | None = None
) -> list[PciFunction]:
    """Every PCI function under ``<root>/bus/pci/devices`` (or just ``addresses``), sorted.

    See :meth:`Reader.functions`.
    """
    return Reader(root).functions(addresses, keep)


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


def link_state(root: Path, ifname: str) -> LinkState | None:
    """The state of netdev ``ifname`` as ``<root>/class/net/<ifname>`` shows it now, shaped like
    the health monitor's messages; None when there is no such netdev.

    A plugin worker applies it before it serves, so its first ListAndWatch list is right without
    waiting for the health monitor; the health monitor's messages take over from there. The
    kernel refuses to read ``carrier`` of a netdev that is down (EINVAL): no carrier then. A tree
    without the file (some virtual devices) leaves the decision to ``operstate``.
    """
    base = os.path.join(str(root), "class", "net", ifname)
    try:
        operstate = _read(os.path.join(base, "operstate")).upper()
    except OSError:
        return None
    try:
        carrier = _read(os.path.join(base, "carrier")) == "1"
    except FileNotFoundError:
        carrier = True
    except OSError:
        carrier = False
    try:
        ifindex = int(_read(os.path.join(base, "ifindex")))
    except (OSError, ValueError):
        ifindex = 0
    return LinkState(ifname, ifindex, operstate or "UNKNOWN", carrier, True)
