"""The data every process agrees on: pool config, PCI functions, pool membership (every process).

``config.py`` produces :class:`NodeConfig`; ``sysfs.py`` produces :class:`PciFunction`;
``pools.py`` matches them into :class:`PoolDiscovery`. Plugin workers consume the latter. All are
frozen dataclasses: compare them with ``==`` (reload uses that to find pools that changed).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

DEFAULT_RESOURCE_PREFIX = "intel.com"
DEFAULT_CONFIG_FILE = "/etc/pcidp/config.json"
DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
DEFAULT_DEVINFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/dp"
DEFAULT_CDI_DIR = "/var/run/cdi"
DEFAULT_RUN_DIR = "/run/sriov-dp"
DEFAULT_SYSFS_ROOT = "/sys"
DEFAULT_DEV_ROOT = "/"  # device nodes are <root>/dev/...


class DeviceType(enum.StrEnum):
    """Selector-format ``deviceType``: what kind of device the pool offers."""

    NET_DEVICE = "netDevice"  # PCI functions of class 0x02xxxx
    ACCELERATOR = "accelerator"  # PCI functions of class 0x12xxxx
    AUX_NET_DEVICE = "auxNetDevice"  # auxiliary devices (e.g. mlx5 SFs) of class 0x02 functions


class VdpaType(enum.StrEnum):
    """Selector ``vdpaType``: the vDPA bus driver a VF's vDPA device must be bound to."""

    VHOST = "vhost"  # vhost_vdpa: a /dev/vhost-vdpa-N char device
    VIRTIO = "virtio"  # virtio_vdpa: a virtio netdev in the host


class LegacyDriverKind(enum.StrEnum):
    """Legacy-format ``deviceType``: the driver family the pool's functions must be bound to."""

    NETDEVICE = "netdevice"  # any kernel network driver (has a netdev)
    UIO = "uio"  # igb_uio, uio_pci_generic
    VFIO = "vfio"  # vfio-pci


class AllocationPolicy(enum.StrEnum):
    """How GetPreferredAllocation picks devices."""

    PACKED = "packed"  # fill the PF with the fewest free VFs first
    BALANCED = "balanced"  # spread across PFs
    NONE = "none"  # no preference (empty answer)


@dataclass(frozen=True, slots=True)
class VfFilter:
    """One ``pfNames`` / ``rootDevices`` entry: a PF (netdev name or PCI address) and VF indexes.

    ``indexes`` is None when the entry has no ``#`` part (every VF of that PF).
    """

    pf: str
    indexes: frozenset[int] | None = None


@dataclass(frozen=True, slots=True)
class Selector:
    """One selector object: fields AND, values within a field OR; empty fields are not applied."""

    vendors: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    pci_addresses: tuple[str, ...] = ()
    pf_names: tuple[VfFilter, ...] = ()
    root_devices: tuple[VfFilter, ...] = ()
    link_types: tuple[str, ...] = ()
    acpi_indexes: tuple[str, ...] = ()
    is_rdma: bool | None = None  # None: not applied; True/False: must (not) have RDMA
    need_vhost_net: bool = False
    aux_types: tuple[str, ...] = ()  # auxNetDevice: the middle part of the name ("sf", "eth")
    ddp_profiles: tuple[str, ...] = ()  # the PF's DDP package name (devlink fw.app.name)
    pkeys: tuple[int, ...] = ()  # the default (index 0) InfiniBand partition key
    vdpa_type: VdpaType | None = None  # the VF's vDPA device must be bound this way


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One validated ``resourceList`` entry, in either format (legacy entries are translated).

    A legacy entry becomes one selector (``rootDevices`` VF filters when ``sriovMode`` is true,
    ``pciAddresses`` otherwise) with ``device_type`` None (no class restriction) and
    ``legacy_driver`` set to the declared driver family.
    """

    resource_name: str
    resource_prefix: str
    selectors: tuple[Selector, ...]
    device_type: DeviceType | None = DeviceType.NET_DEVICE
    legacy_driver: LegacyDriverKind | None = None
    exclude_topology: bool = False
    additional_info: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    allocation_policy: AllocationPolicy = AllocationPolicy.PACKED
    index: int = 0  # position in resourceList (first match wins across pools)

    @property
    def resource(self) -> str:
        """The kubelet resource name, ``<prefix>/<name>``."""
        return f"{self.resource_prefix}/{self.resource_name}"

    @property
    def child_name(self) -> str:
        """Name of this pool's worker in the supervisor's table and in bus topics (no dots)."""
        return child_name(self.resource_prefix, self.resource_name)

    def extra_info(self, device_id: str) -> dict[str, str]:
        """``additionalInfo`` for one device: the ``"*"`` map overridden key by key by its own."""
        maps = dict(self.additional_info)
        merged = dict(maps.get("*", ()))
        merged.update(dict(maps.get(device_id, ())))
        return merged

    @property
    def is_aux(self) -> bool:
        return self.device_type is DeviceType.AUX_NET_DEVICE

    @property
    def offers_roots(self) -> bool:
        """A legacy pool with ``sriovMode: false``: its root devices are offered themselves,
        also a PF that has VFs (the original plugin's README)."""
        return self.legacy_driver is not None and any(s.pci_addresses for s in self.selectors)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A whole validated config file."""

    path: str
    pools: tuple[PoolConfig, ...]
    #: the validated document as read (the supervisor hands this exact text to its workers)
    text: str = field(default="", compare=False, repr=False)

    def pool(self, child: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.child_name == child), None)


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_NOT_ENV = re.compile(r"[^A-Z0-9_]")


def child_name(prefix: str, name: str) -> str:
    """``intel.com`` + ``sriov_net_A`` -> ``intel-com_sriov_net_A``."""
    return f"{_UNSAFE.sub('-', prefix)}_{name}"


def env_name(resource: str) -> str:
    """``intel.com/sriov_net_A`` -> ``PCIDEVICE_INTEL_COM_SRIOV_NET_A``."""
    return "PCIDEVICE_" + _NOT_ENV.sub("_", resource.upper())


@dataclass(frozen=True, slots=True)
class VdpaDevice:
    """A vDPA device on the vdpa bus whose parent is a function (``bus/vdpa/devices/vdpaN``)."""

    name: str  # "vdpa0"
    driver: str | None  # "vhost_vdpa", "virtio_vdpa", None when unbound
    vhost_device: str | None = None  # vhost_vdpa: "vhost-vdpa-0" (its /dev node)
    netdevs: tuple[str, ...] = ()  # virtio_vdpa: the virtio netdev(s)

    @property
    def type(self) -> VdpaType | None:
        """The vdpaType this binding satisfies; None for any other driver."""
        return {"vhost_vdpa": VdpaType.VHOST, "virtio_vdpa": VdpaType.VIRTIO}.get(self.driver or "")


@dataclass(frozen=True, slots=True)
class PciFunction:
    """What sysfs says about one PCI function. Fields that do not apply are None or empty."""

    address: str  # "0000:03:02.1"
    vendor: str  # "8086" (lower-case hex, no 0x)
    device: str  # "154c"
    pci_class: int  # 0x020000
    driver: str | None  # "iavf", "vfio-pci", "igb_uio", None when unbound
    numa_node: int | None  # None when -1, missing or unreadable
    iommu_group: str | None  # "42"
    iommu_noiommu: bool = False  # the group's name reads "vfio-noiommu"
    pf_address: str | None = None  # VFs: the PF's address
    pf_name: str | None = None  # VFs: the PF's first netdev
    vf_index: int | None = None  # VFs: N of the PF's virtfnN link
    netdevs: tuple[str, ...] = ()
    link_type: str | None = None  # "ether", "infiniband" (from net/<if>/type)
    uio_devices: tuple[str, ...] = ()  # "uio0"
    rdma_devices: tuple[str, ...] = ()  # infiniband device names, e.g. "mlx5_0"
    rdma_char_devices: tuple[str, ...] = ()  # "/dev/infiniband/uverbs0", ...
    acpi_index: str | None = None
    sriov_totalvfs: int | None = None  # PFs (SR-IOV capable functions)
    sriov_numvfs: int | None = None
    vf_addresses: tuple[str, ...] = ()  # PFs: addresses of their VFs, by index order
    pkeys: tuple[int, ...] = ()  # index-0 pkey of each port of its RDMA devices
    vdpa: VdpaDevice | None = None  # a vDPA device on top of this function
    cxi_devices: tuple[str, ...] = ()  # Slingshot CXI char devices, e.g. "cxi0"
    warnings: tuple[str, ...] = ()  # odd or unreadable sysfs entries of this function

    @property
    def is_vf(self) -> bool:
        return self.pf_address is not None

    @property
    def netdev(self) -> str | None:
        return self.netdevs[0] if self.netdevs else None


@dataclass(frozen=True, slots=True)
class AuxDevice:
    """An auxiliary network device (``bus/auxiliary/devices/<driver>.<type>.<id>``), e.g. an mlx5
    subfunction; ``parent`` is the PCI function it lives on."""

    name: str  # "mlx5_core.sf.4"
    aux_type: str  # "sf"
    index: int  # SFs: sfnum; other types: the <id> of the name
    parent: PciFunction
    driver: str | None  # the auxiliary driver bound ("mlx5_core.sf"), None when unbound
    netdevs: tuple[str, ...] = ()
    link_type: str | None = None
    rdma_devices: tuple[str, ...] = ()
    rdma_char_devices: tuple[str, ...] = ()
    pkeys: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def netdev(self) -> str | None:
        return self.netdevs[0] if self.netdevs else None


@dataclass(frozen=True, slots=True)
class PoolDevice:
    """One device a pool advertises: the function plus the options of the selector that matched.

    For an auxiliary device, ``aux`` is set and ``function`` is its parent PCI function.
    """

    function: PciFunction
    is_rdma: bool = False
    need_vhost_net: bool = False
    extra: tuple[tuple[str, str], ...] = ()
    #: the netdev whose link decides health: a VF's PF netdev, an SF's parent's netdev, else the
    #: function's own; None: none
    health_link: str | None = None
    aux: AuxDevice | None = None
    vdpa_type: VdpaType | None = None  # set when the selector that matched asked for vDPA

    @property
    def id(self) -> str:
        return self.aux.name if self.aux is not None else self.function.address

    @property
    def rdma_devices(self) -> tuple[str, ...]:
        return self.aux.rdma_devices if self.aux is not None else self.function.rdma_devices

    @property
    def rdma_char_devices(self) -> tuple[str, ...]:
        if self.aux is not None:
            return self.aux.rdma_char_devices
        return self.function.rdma_char_devices


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A function a pool would have matched but does not offer, and why."""

    id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PoolDiscovery:
    """The result of matching the node's functions against one pool."""

    pool: PoolConfig
    devices: tuple[PoolDevice, ...] = ()
    excluded: tuple[Exclusion, ...] = field(default=())
    #: ``additionalInfo`` keys (other than ``"*"``) that name none of the pool's devices
    unused_info_ids: tuple[str, ...] = ()
    #: PCI addresses and PF names the pool's selectors name that do not exist on the node
    #: (``pools.explain``; matching alone does not tell)
    not_found: tuple[str, ...] = ()
    #: things about the pool an operator should know, one sentence each (``pools.explain``)
    warnings: tuple[str, ...] = ()
