"""uio-bound functions (igb_uio, uio_pci_generic; plugin worker process): ``/dev/uioN``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import register

UIO_DRIVERS = frozenset({"igb_uio", "uio_pci_generic"})


@register
class Uio(DriverFamily):
    name = "uio"

    def applies(self, device: PoolDevice) -> bool:
        return device.function.driver in UIO_DRIVERS

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        uio = device.function.uio_devices
        return (Spec(f"/dev/{uio[0]}", f"/dev/{uio[0]}"),) if uio else ()

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        uio = device.function.uio_devices
        return {"uio": {"mount": f"/dev/{uio[0]}"}} if uio else {}
