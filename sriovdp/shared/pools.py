"""Matches PCI functions to resource pools (CLI ``discover``, plugin workers, supervisor).

Owns the pool-membership rules (REFERENCE.md):

- within a selector the fields AND, values within a field OR, empty fields are not applied; a pool
  matches a function when any of its selectors does and the pool's ``deviceType`` class (0x02
  network, 0x12 accelerator) fits;
- a function belongs to the first pool in file order that offers it; later pools that also match
  list it as "claimed by earlier pool ...";
- a matched function is not offered (and listed as excluded, with the reason) when it has no
  driver, is an SR-IOV PF with VFs, or carries the node's IPv4 default route: these hold for every
  pool, so nobody claims it; but a legacy ``sriovMode: false`` pool offers its root devices
  themselves, a PF with VFs too (the original plugin's README);
- a legacy pool leaves out a function whose bound driver contradicts its declared ``deviceType``;
  that function stays free for a later pool (e.g. a ``vfio`` pool on the same root devices);
- likewise a selector whose other fields match but whose ``vdpaType``, ``ddpProfiles`` or
  ``pKeys`` do not leaves the function out with the reason (the VF's vDPA binding, the PF's DDP
  package or devlink's failure to tell it, the default pkey), free for a later pool;
- a selector's flags (``isRdma``, ``needVhostNet``, ``vdpaType``) come from the first selector
  of the pool that matches the device (upstream's order rule);
- ``auxNetDevice`` pools match auxiliary devices (:class:`AuxDevice`), never PCI functions:
  ``vendors``, ``devices``, ``drivers``, ``pciAddresses`` and ``acpiIndexes`` look at the parent
  PCI function, ``pfNames``/``rootDevices`` name the parent with ``#`` ranges over the SF number
  (``sfnum``; other types: the name's ``<id>``), ``linkTypes`` and ``isRdma`` at the device's own
  netdev and RDMA device, ``auxTypes`` at the middle part of its name.

:func:`match` is pure; :func:`discover` and :func:`discover_pool` read sysfs and procfs first.
:func:`explain` adds what matching cannot see, for ``discover``: names not on the node, named PFs
without VFs, near misses on the PCI class or ``linkTypes``.

What a plugin worker reads (:func:`discover_pool`, :func:`pool_scope`): when every selector of its
pool names its candidates (``pciAddresses``, ``rootDevices`` or ``pfNames``; the legacy form
always does), only those functions are read: the named addresses, and the VFs behind the PF's
``virtfnN`` links (a PF named by netdev is found through ``class/net``), with the ``#`` indexes
applied to ``N``. Otherwise the whole bus is listed, but a function whose cheap entries (class,
vendor, device, driver, address, being a VF) rule out every selector is not read further. First
match wins needs only whether an earlier pool matches one of those candidates.

The one difference from :func:`discover`: a VF whose ``physfn`` names a PF that has no
``virtfnN`` link to it (a broken tree; the kernel always makes both) is not a candidate of a
``pfNames``/``rootDevices`` selector without ``#`` indexes, where :func:`discover` matches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sriovdp.shared import routes, sysfs
from sriovdp.shared.config import normalize_pci_address
from sriovdp.shared.ddp import DdpReader, DdpUnavailable
from sriovdp.shared.model import (
    AuxDevice,
    DeviceType,
    Exclusion,
    LegacyDriverKind,
    NodeConfig,
    PciFunction,
    PoolConfig,
    PoolDevice,
    PoolDiscovery,
    Selector,
    VfFilter,
)

__all__ = [
    "Scope",
    "aux_selector_matches",
    "discover",
    "discover_pool",
    "explain",
    "explain_named",
    "legacy_driver_problem",
    "match",
    "pool_scope",
    "selector_matches",
    "selector_problem",
]

_CLASS_OF = {
    DeviceType.NET_DEVICE: 0x02,
    DeviceType.ACCELERATOR: 0x12,
    DeviceType.AUX_NET_DEVICE: 0x02,  # the parent function's class
}
_VFIO_DRIVERS = frozenset({"vfio-pci"})
_UIO_DRIVERS = frozenset({"igb_uio", "uio_pci_generic"})


def _filter_matches(
    filters: Iterable[VfFilter],
    pf_address: str | None,
    pf_name: str | None,
    index: int | None,
    by_name: bool,
) -> bool:
    if pf_address is None:
        return False
    for flt in filters:
        if flt.indexes is not None and index not in flt.indexes:
            continue
        if flt.pf == pf_address:
            return True
        if by_name and pf_name is not None and flt.pf.casefold() == pf_name.casefold():
            return True
    return False


def _vf_filter_matches(filters: Iterable[VfFilter], fn: PciFunction, by_name: bool) -> bool:
    return _filter_matches(filters, fn.pf_address, fn.pf_name, fn.vf_index, by_name)


def selector_matches(sel: Selector, fn: PciFunction) -> bool:
    """Every non-empty field of ``sel`` holds for ``fn`` (but ``vdpaType``, ``ddpProfiles`` and
    ``pKeys``, which :func:`selector_problem` decides)."""
    return not (
        (sel.vendors and fn.vendor not in sel.vendors)
        or (sel.devices and fn.device not in sel.devices)
        or (sel.drivers and fn.driver not in sel.drivers)
        or (sel.pci_addresses and fn.address not in sel.pci_addresses)
        or (sel.pf_names and not _vf_filter_matches(sel.pf_names, fn, by_name=True))
        or (sel.root_devices and not _vf_filter_matches(sel.root_devices, fn, by_name=False))
        or (sel.link_types and fn.link_type not in sel.link_types)
        or (sel.acpi_indexes and fn.acpi_index not in sel.acpi_indexes)
        or (sel.is_rdma is not None and bool(fn.rdma_devices) != sel.is_rdma)
    )


def aux_selector_matches(sel: Selector, aux: AuxDevice) -> bool:
    """Every non-empty field of ``sel`` holds for auxiliary device ``aux`` (see the module doc)."""
    fn = aux.parent
    return not (
        (sel.vendors and fn.vendor not in sel.vendors)
        or (sel.devices and fn.device not in sel.devices)
        or (sel.drivers and fn.driver not in sel.drivers)
        or (sel.pci_addresses and fn.address not in sel.pci_addresses)
        or (sel.acpi_indexes and fn.acpi_index not in sel.acpi_indexes)
        or (sel.aux_types and aux.aux_type not in sel.aux_types)
        or (
            sel.pf_names
            and not _filter_matches(sel.pf_names, fn.address, fn.netdev, aux.index, True)
        )
        or (
            sel.root_devices
            and not _filter_matches(sel.root_devices, fn.address, fn.netdev, aux.index, False)
        )
        or (sel.link_types and aux.link_type not in sel.link_types)
        or (sel.is_rdma is not None and bool(aux.rdma_devices) != sel.is_rdma)
    )


def _pkey(value: int) -> str:
    return f"0x{value:04x}"


def selector_problem(sel: Selector, fn: PciFunction, ddp: DdpReader | None) -> str | None:
    """Why ``fn``, which the rest of ``sel`` matches, still does not fit its ``vdpaType``,
    ``pKeys`` or ``ddpProfiles``; None when it fits."""
    if sel.vdpa_type is not None:
        vdpa = fn.vdpa
        if vdpa is None:
            return f"no vDPA device (vdpaType {sel.vdpa_type.value})"
        if vdpa.type is not sel.vdpa_type:
            bound = f"bound to {vdpa.driver}" if vdpa.driver else "not bound to a vDPA driver"
            return f"vDPA device {vdpa.name} is {bound}, not {sel.vdpa_type.value}"
    if sel.pkeys:
        if not fn.pkeys:
            return "no InfiniBand port with a pkey (pKeys)"
        if not set(fn.pkeys) & set(sel.pkeys):
            shown = ", ".join(_pkey(k) for k in fn.pkeys)
            return f"default pkey {shown} not in pKeys"
    if sel.ddp_profiles:
        pf = fn.pf_address or fn.address
        reader = ddp or DdpReader()
        try:
            package = reader.package(pf)
        except DdpUnavailable as exc:
            return str(exc)
        finally:
            if reader is not ddp:
                reader.close()
        if package not in sel.ddp_profiles:
            return f"PF {pf} runs DDP package {package!r}, not one of ddpProfiles"
    return None


def _class_fits(pool: PoolConfig, fn: PciFunction) -> bool:
    return pool.device_type is None or (fn.pci_class >> 16) == _CLASS_OF[pool.device_type]


def _matching_selector(pool: PoolConfig, fn: PciFunction) -> Selector | None:
    """The first selector whose plain fields match (vdpaType, pKeys, ddpProfiles aside)."""
    if pool.is_aux or not _class_fits(pool, fn):
        return None
    return next((s for s in pool.selectors if selector_matches(s, fn)), None)


def _selected(
    pool: PoolConfig, fn: PciFunction, ddp: DdpReader | None
) -> tuple[Selector | None, str | None]:
    """(the first selector that fully matches, None) or (None, why the first that matched its
    plain fields still does not fit), or (None, None) when no selector is near."""
    if pool.is_aux or not _class_fits(pool, fn):
        return None, None
    first_problem: str | None = None
    for sel in pool.selectors:
        if not selector_matches(sel, fn):
            continue
        problem = selector_problem(sel, fn, ddp)
        if problem is None:
            return sel, None
        first_problem = first_problem or problem
    return None, first_problem


def legacy_driver_problem(kind: LegacyDriverKind, fn: PciFunction) -> str | None:
    """Why ``fn``'s bound driver contradicts a legacy ``deviceType``; None when it fits."""
    driver = fn.driver
    if kind is LegacyDriverKind.VFIO:
        ok = driver in _VFIO_DRIVERS
    elif kind is LegacyDriverKind.UIO:
        ok = driver in _UIO_DRIVERS or bool(fn.uio_devices)
    else:
        ok = bool(fn.netdevs) and driver not in _VFIO_DRIVERS | _UIO_DRIVERS
    if ok:
        return None
    if kind is LegacyDriverKind.NETDEVICE and driver not in _VFIO_DRIVERS | _UIO_DRIVERS:
        return f"driver {driver} contradicts deviceType netdevice (no network interface)"
    return f"driver {driver} contradicts deviceType {kind.value}"


def _global_problem(
    fn: PciFunction, default_ifaces: frozenset[str], roots: bool = False
) -> str | None:
    """Reasons no pool may offer ``fn``; ``roots``: for a legacy ``sriovMode: false`` pool,
    which offers a PF that has VFs too."""
    if fn.driver is None:
        return "no driver bound"
    if not roots and fn.sriov_totalvfs is not None and fn.sriov_numvfs:
        return f"PF with {fn.sriov_numvfs} VFs is not offered itself"
    carrying = sorted(set(fn.netdevs) & default_ifaces)
    if carrying:
        return f"carries the node's IPv4 default route ({', '.join(carrying)})"
    return None


def _aux_global_problem(aux: AuxDevice, default_ifaces: frozenset[str]) -> str | None:
    """Reasons no pool may offer auxiliary device ``aux``."""
    if aux.driver is None:
        return "no driver bound"
    if not aux.netdevs:
        return "no network interface (not an auxiliary network device)"
    carrying = sorted(set(aux.netdevs) & default_ifaces)
    if carrying:
        return f"carries the node's IPv4 default route ({', '.join(carrying)})"
    return None


def _device(pool: PoolConfig, sel: Selector, fn: PciFunction) -> PoolDevice:
    health = fn.pf_name if fn.is_vf else fn.netdev
    return PoolDevice(
        function=fn,
        is_rdma=sel.is_rdma is True,
        need_vhost_net=sel.need_vhost_net,
        extra=tuple(sorted(pool.extra_info(fn.address).items())),
        health_link=health,
        vdpa_type=sel.vdpa_type,
    )


def _own_extra(pool: PoolConfig, aux: AuxDevice) -> dict[str, str]:
    return dict(dict(pool.additional_info).get(aux.name, ()))


def _aux_device(pool: PoolConfig, sel: Selector, aux: AuxDevice) -> PoolDevice:
    return PoolDevice(
        function=aux.parent,
        is_rdma=sel.is_rdma is True,
        # upstream keys an SF's additionalInfo by its parent's PCI address; the SF's own name
        # (ours) overrides that, key by key
        extra=tuple(
            sorted({**pool.extra_info(aux.parent.address), **_own_extra(pool, aux)}.items())
        ),
        health_link=aux.parent.netdev,  # an SF follows its parent PF's link, as a VF does
        aux=aux,
    )


def _match_functions(
    pools: Sequence[PoolConfig],
    functions: Iterable[PciFunction],
    default_ifaces: frozenset[str],
    ddp: DdpReader | None,
    *,
    devices: dict[int, list[PoolDevice]],
    excluded: dict[int, list[Exclusion]],
) -> None:
    """PCI functions against the pools (not auxNetDevice ones), first pool wins."""
    for fn in sorted(functions, key=lambda f: f.address):
        owner: PoolConfig | None = None
        problem = _global_problem(fn, default_ifaces)
        roots_problem = _global_problem(fn, default_ifaces, roots=True)
        for i, pool in enumerate(pools):
            if pool.is_aux or _matching_selector(pool, fn) is None:
                continue
            reason = roots_problem if pool.offers_roots else problem
            if reason is None and owner is not None:
                reason = f"claimed by earlier pool {owner.resource}"
            if reason is None and pool.legacy_driver is not None:
                reason = legacy_driver_problem(pool.legacy_driver, fn)
            sel: Selector | None = None
            if reason is None:
                sel, reason = _selected(pool, fn, ddp)
            if sel is None:
                excluded[i].append(Exclusion(fn.address, reason or "no selector fits"))
                continue
            owner = pool
            devices[i].append(_device(pool, sel, fn))


def _match_pools(
    pools: Sequence[PoolConfig],
    functions: Iterable[PciFunction],
    default_ifaces: frozenset[str],
    aux_devices: Iterable[AuxDevice] = (),
    ddp: DdpReader | None = None,
) -> list[PoolDiscovery]:
    devices: dict[int, list[PoolDevice]] = {i: [] for i in range(len(pools))}
    excluded: dict[int, list[Exclusion]] = {i: [] for i in range(len(pools))}
    own_ddp = ddp is None and any(s.ddp_profiles for p in pools for s in p.selectors)
    if own_ddp:
        ddp = DdpReader()  # one devlink socket for this matching, closed below
    try:
        _match_functions(pools, functions, default_ifaces, ddp, devices=devices, excluded=excluded)
    finally:
        if own_ddp and ddp is not None:
            ddp.close()
    for aux in sorted(aux_devices, key=lambda a: a.name):
        aux_owner: PoolConfig | None = None
        problem = _aux_global_problem(aux, default_ifaces)
        for i, pool in enumerate(pools):
            if not pool.is_aux or not _class_fits(pool, aux.parent):
                continue
            aux_sel = next((s for s in pool.selectors if aux_selector_matches(s, aux)), None)
            if aux_sel is None:
                continue
            reason = problem
            if reason is None and aux_owner is not None:
                reason = f"claimed by earlier pool {aux_owner.resource}"
            if reason is not None:
                excluded[i].append(Exclusion(aux.name, reason))
                continue
            aux_owner = pool
            devices[i].append(_aux_device(pool, aux_sel, aux))
    return [
        PoolDiscovery(
            pool=p,
            devices=tuple(devices[i]),
            excluded=tuple(excluded[i]),
            unused_info_ids=_unused_info_ids(p, devices[i]),
        )
        for i, p in enumerate(pools)
    ]


def _unused_info_ids(pool: PoolConfig, devices: Sequence[PoolDevice]) -> tuple[str, ...]:
    ids = {d.id for d in devices} | {d.function.address for d in devices if d.aux is not None}
    return tuple(k for k, _ in pool.additional_info if k != "*" and k not in ids)


def match(
    config: NodeConfig,
    functions: Iterable[PciFunction],
    default_route_ifaces: Iterable[str] = (),
    aux_devices: Iterable[AuxDevice] = (),
    ddp: DdpReader | None = None,
) -> list[PoolDiscovery]:
    """One :class:`PoolDiscovery` per pool, in file order. Pure but for ``ddp`` (devlink is
    asked only for pools with ``ddpProfiles``; give a reader with recorded answers to test)."""
    return _match_pools(config.pools, functions, frozenset(default_route_ifaces), aux_devices, ddp)


def discover(
    config: NodeConfig,
    sysfs_root: Path,
    proc_root: Path = Path("/proc"),
    ddp: DdpReader | None = None,
) -> list[PoolDiscovery]:
    """Reads the node and matches every pool."""
    reader = sysfs.Reader(sysfs_root)
    functions = reader.functions()
    aux = reader.aux_devices() if any(p.is_aux for p in config.pools) else []
    return match(config, functions, routes.default_route_ifaces(proc_root), aux, ddp)


#: what a pool's ``deviceType`` asks of a function's PCI class, for a reason
_CLASS_NAMES = {0x02: "a network controller (0x02)", 0x12: "a processing accelerator (0x12)"}


def _names_functions(sel: Selector) -> bool:
    """Whether a selector says which functions it wants by more than a vendor: then a function
    that matches it in all but the PCI class is a mistake worth showing (a vendor alone, or an
    empty selector, matches every bridge and controller of that vendor)."""
    return bool(
        sel.devices
        or sel.drivers
        or sel.pci_addresses
        or sel.pf_names
        or sel.root_devices
        or sel.acpi_indexes
    )


def _near_miss(pool: PoolConfig, fn: PciFunction) -> str | None:
    """Why ``fn``, which a selector of ``pool`` matches in all but its class or ``linkTypes``,
    is not in the pool; None when no selector comes that close."""
    for sel in pool.selectors:
        if not _class_fits(pool, fn):
            if _names_functions(sel) and selector_matches(sel, fn):
                assert pool.device_type is not None  # a legacy pool has no class restriction
                want = _CLASS_NAMES[_CLASS_OF[pool.device_type]]
                return (
                    f"PCI class 0x{fn.pci_class:06x} is not {want}, which deviceType "
                    f"{pool.device_type.value} offers"
                )
            continue
        if (
            sel.link_types
            and fn.link_type is None
            and selector_matches(replace(sel, link_types=()), fn)
        ):
            return (
                f"no network interface (driver {fn.driver}), so linkTypes "
                f"{', '.join(sel.link_types)} cannot match"
            )
    return None


def _root_problem(pool: PoolConfig, pf: PciFunction) -> str | None:
    """Why a PF that a ``rootDevices``/``pfNames`` entry names gives the pool no VFs."""
    if pf.sriov_totalvfs is None:
        why = "not an SR-IOV PF (no sriov_totalvfs): it has no VFs to offer"
    elif not pf.vf_addresses:
        why = (
            "PF with no VFs (sriov_numvfs 0); the pool takes its VFs when they are created, "
            "without a restart"
        )
    else:
        return None
    return f"sriovMode true: {why}" if pool.legacy_driver is not None else why


def explain(result: PoolDiscovery, functions: Sequence[PciFunction]) -> PoolDiscovery:
    """``result`` (one pool's :func:`match`) with what matching alone does not say, for
    ``discover``: the addresses and PF names its selectors name that are not on the node
    (``not_found``); a named PF that gives no VFs (not SR-IOV, or no VFs yet), a function that
    a selector matches but for its PCI class, and one that has no netdev for ``linkTypes``
    (``excluded``, with the reason); a PF a legacy ``sriovMode: false`` pool offers although it
    has VFs (``warnings``). ``functions``: every function of the node.
    """
    pool = result.pool
    by_address = {fn.address: fn for fn in functions}
    by_netdev = {n.casefold(): fn for fn in functions for n in fn.netdevs}
    seen = {d.function.address for d in result.devices if d.aux is None}
    seen |= {e.id for e in result.excluded}
    excluded = list(result.excluded)
    not_found: list[str] = []
    warnings: list[str] = []
    for sel in pool.selectors:
        for address in sel.pci_addresses:
            fn = by_address.get(address)
            if fn is None:
                not_found.append(address)
            elif pool.offers_roots and fn.sriov_totalvfs is not None and fn.sriov_numvfs:
                warnings.append(
                    f"{address} has {fn.sriov_numvfs} VFs and is offered itself (sriovMode "
                    "false); sriovMode true would offer its VFs instead"
                )
        named = [(f.pf, False) for f in sel.root_devices] + [(f.pf, True) for f in sel.pf_names]
        for name, by_name in named:
            pf = by_address.get(name)
            if pf is None and by_name and not _is_address(name):
                pf = by_netdev.get(name.casefold())
            if pf is None:
                not_found.append(name)
                continue
            problem = None if pool.is_aux or pf.address in seen else _root_problem(pool, pf)
            if problem is not None:
                excluded.append(Exclusion(pf.address, problem))
                seen.add(pf.address)
    if not pool.is_aux:
        for fn in sorted(functions, key=lambda f: f.address):
            if fn.address in seen:
                continue
            reason = _near_miss(pool, fn)
            if reason is not None:
                excluded.append(Exclusion(fn.address, reason))
    return replace(
        result,
        excluded=tuple(excluded),
        not_found=tuple(dict.fromkeys(not_found)),
        warnings=tuple(warnings),
    )


def explain_named(result: PoolDiscovery, sysfs_root: Path) -> PoolDiscovery | None:
    """:func:`explain` for a plugin worker, reading only the functions the pool names (its
    :func:`pool_scope`: the named addresses, the named PFs and their VFs); None for a pool
    whose selectors need the whole bus (explaining it would read every function)."""
    reader = sysfs.Reader(sysfs_root)
    scope = pool_scope(result.pool, reader)
    if scope is None:
        return None
    return explain(result, reader.functions([*scope.pfs, *scope.addresses]))


@dataclass(frozen=True, slots=True)
class Scope:
    """The functions one pool can match, when its selectors name them (see the module doc)."""

    #: PFs the pool's ``pfNames``/``rootDevices`` resolve to (by address or netdev name), sorted
    pfs: tuple[str, ...]
    #: every function the pool can match, sorted: ``pciAddresses`` and the PFs' chosen VFs
    addresses: tuple[str, ...]


def _is_address(pf: str) -> bool:
    return normalize_pci_address(pf) is not None


def pool_scope(pool: PoolConfig, reader: sysfs.Reader) -> Scope | None:
    """The pool's candidates, read through ``reader``; None when a selector needs the whole bus.

    A selector with ``pciAddresses`` contributes those; else one with ``rootDevices`` or
    ``pfNames`` the VFs of the PFs they name (``#`` indexes applied to the ``virtfnN`` links).
    Both are supersets of what the selector matches (its other fields still apply).
    """
    if pool.is_aux or not all(
        s.pci_addresses or s.root_devices or s.pf_names for s in pool.selectors
    ):
        return None
    names = {
        f.pf
        for s in pool.selectors
        if not (s.pci_addresses or s.root_devices)
        for f in s.pf_names
        if not _is_address(f.pf)
    }
    by_name = reader.pfs_with_netdev(names)
    pfs: set[str] = set()
    addresses: set[str] = set()
    for sel in pool.selectors:
        if sel.pci_addresses:
            addresses.update(sel.pci_addresses)
            continue
        for flt in sel.root_devices or sel.pf_names:
            named = {flt.pf} if _is_address(flt.pf) else by_name[flt.pf.casefold()]
            for pf in sorted(named):
                pfs.add(pf)
                addresses.update(
                    vf
                    for n, vf in reader.virtfns(pf).items()
                    if flt.indexes is None or n in flt.indexes
                )
    return Scope(tuple(sorted(pfs)), tuple(sorted(addresses)))


def _could_match(pool: PoolConfig) -> sysfs.Keep:
    """Whether a function's cheap entries leave any selector of ``pool`` a chance (a superset of
    :func:`_matching_selector`, decided before the expensive entries are read)."""
    want_class = None if pool.device_type is None else _CLASS_OF[pool.device_type]

    def keep(b: sysfs.Basics) -> bool:
        if want_class is not None and (b.pci_class >> 16) != want_class:
            return False
        return any(
            not (
                (s.vendors and b.vendor not in s.vendors)
                or (s.devices and b.device not in s.devices)
                or (s.drivers and b.driver not in s.drivers)
                or (s.pci_addresses and b.address not in s.pci_addresses)
                or ((s.pf_names or s.root_devices) and not b.maybe_vf)
            )
            for s in pool.selectors
        )

    return keep


def discover_pool(
    config: NodeConfig,
    child: str,
    sysfs_root: Path,
    proc_root: Path = Path("/proc"),
    reader: sysfs.Reader | None = None,
    *,
    ddp: DdpReader | None = None,
) -> PoolDiscovery:
    """The discovery of one pool (by worker name), for that pool's plugin worker.

    Equal to that pool's entry of :func:`discover` (but see the module doc for a broken tree),
    reading only what the pool can need: its :func:`pool_scope` when it has one, else the bus
    with the cheap-entry filter. Only the target pool and the pools before it are matched (first
    match wins needs the earlier ones; the later ones cannot change the answer), and the earlier
    pools only on the target's candidates. ``reader``: to look at what was read (tests). Raises
    KeyError for an unknown ``child``.
    """
    target = config.pool(child)
    if target is None:
        raise KeyError(f"no pool named {child!r} in {config.path}")
    reader = sysfs.Reader(sysfs_root) if reader is None else reader
    ifaces = routes.default_route_ifaces(proc_root)
    if target.is_aux:  # auxiliary devices: only earlier aux pools can claim them
        aux_pools = [p for p in config.pools if p.is_aux and p.index <= target.index]
        return _match_pools(aux_pools, (), ifaces, reader.aux_devices(), ddp)[-1]
    scope = pool_scope(target, reader)
    if scope is None:
        bound = [s.drivers for s in target.selectors]
        drivers = frozenset().union(*bound) if bound and all(bound) else None
        functions = reader.functions(keep=_could_match(target), drivers=drivers)
    else:
        functions = reader.functions(scope.addresses)
    candidates = [fn for fn in functions if _matching_selector(target, fn) is not None]
    earlier = [p for p in config.pools if p.index < target.index and not p.is_aux]
    return _match_pools([*earlier, target], candidates, ifaces, (), ddp)[-1]
