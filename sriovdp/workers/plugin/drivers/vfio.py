"""vfio-pci functions (plugin worker process): ``/dev/vfio/vfio`` plus the IOMMU group node.

A group whose ``name`` reads ``vfio-noiommu`` lives at ``/dev/vfio/noiommu-<g>`` on the host; the
container still sees ``/dev/vfio/<g>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import register

VFIO_CONTAINER = "/dev/vfio/vfio"


def group_paths(device: PoolDevice) -> tuple[str, str] | None:
    """(container path, host path) of the device's IOMMU group node, None without a group."""
    group = device.function.iommu_group
    if not group:
        return None
    host = f"/dev/vfio/noiommu-{group}" if device.function.iommu_noiommu else f"/dev/vfio/{group}"
    return f"/dev/vfio/{group}", host


@register
class Vfio(DriverFamily):
    name = "vfio"

    def applies(self, device: PoolDevice) -> bool:
        return device.function.driver == "vfio-pci"

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        group = group_paths(device)
        base = (Spec(VFIO_CONTAINER, VFIO_CONTAINER),)
        return base if group is None else (*base, Spec(group[0], group[1]))

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        group = group_paths(device)
        entry = {"mount": VFIO_CONTAINER}
        if group is not None:
            entry["dev-mount"] = group[0]
        return {"vfio": entry}
