"""Kernel network drivers (iavf, ixgbevf, mlx5_core, ...; plugin worker process).

The container gets the interface through the CNI, not a device node: no specs, no ``_INFO``
extras. The family exists so the set of known device types is explicit and listed in logs.
"""

from __future__ import annotations

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverFamily
from sriovdp.workers.plugin.drivers.registry import register
from sriovdp.workers.plugin.drivers.uio import UIO_DRIVERS


@register
class Netdev(DriverFamily):
    name = "netdev"

    def applies(self, device: PoolDevice) -> bool:
        driver = device.function.driver
        return driver is not None and driver != "vfio-pci" and driver not in UIO_DRIVERS
