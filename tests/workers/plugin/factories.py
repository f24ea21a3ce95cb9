"""Builders of model objects for unit tests (no sysfs needed)."""

from __future__ import annotations

from sriovdp.shared.model import AllocationPolicy, PciFunction, PoolConfig, PoolDevice, Selector


def pool(
    name: str = "net",
    prefix: str = "example.com",
    policy: AllocationPolicy = AllocationPolicy.PACKED,
    exclude_topology: bool = False,
) -> PoolConfig:
    return PoolConfig(
        resource_name=name,
        resource_prefix=prefix,
        selectors=(Selector(),),
        allocation_policy=policy,
        exclude_topology=exclude_topology,
    )


def vf(
    pf: int,
    index: int,
    driver: str = "iavf",
    *,
    numa: int | None = 0,
    group: str | None = None,
    noiommu: bool = False,
    uio: tuple[str, ...] = (),
    rdma: tuple[str, ...] = (),
    rdma_char: tuple[str, ...] = (),
    is_rdma: bool = False,
    vhost: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> PoolDevice:
    """VF ``index`` of PF number ``pf`` (PF ``0000:0<pf>:00.0``, netdev ``pf<pf>``)."""
    address = f"0000:{0x10 + pf:02x}:{index // 8:02x}.{index % 8}"
    fn = PciFunction(
        address=address,
        vendor="8086",
        device="154c",
        pci_class=0x020000,
        driver=driver,
        numa_node=numa,
        iommu_group=group if group is not None else f"{pf * 100 + index}",
        iommu_noiommu=noiommu,
        pf_address=f"0000:0{pf}:00.0",
        pf_name=f"pf{pf}",
        vf_index=index,
        netdevs=(f"pf{pf}v{index}",) if driver == "iavf" else (),
        uio_devices=uio,
        rdma_devices=rdma,
        rdma_char_devices=rdma_char,
    )
    return PoolDevice(fn, is_rdma, vhost, extra, health_link=f"pf{pf}")


def plain(address: str, netdev: str | None, driver: str = "e1000e") -> PoolDevice:
    """A function that is not a VF."""
    fn = PciFunction(address, "8086", "10d3", 0x020000, driver, None, None,
                     netdevs=(netdev,) if netdev else ())  # fmt: skip
    return PoolDevice(fn, health_link=netdev)
