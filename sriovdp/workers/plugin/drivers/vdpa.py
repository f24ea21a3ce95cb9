"""vDPA (``vdpaType``; plugin worker process): a VF's vDPA device, as the selector asked for it.

``vhost``: the ``/dev/vhost-vdpa-N`` char device (upstream gives it ``mrw``) and ``_INFO``
``{"vdpa": {"mount": ...}}``; ``virtio``: no device node (the virtio netdev stays in the host, the
CNI moves it) and an empty ``vdpa`` section, as upstream. Either way the device-info file is of
type ``vdpa`` (NPWG device-info spec 1.1.0): parent device, driver, path (vhost), PCI addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice, VdpaType
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import register

NPWG_VERSION = "1.1.0"


def vhost_path(device: PoolDevice) -> str | None:
    vdpa = device.function.vdpa
    if device.vdpa_type is not VdpaType.VHOST or vdpa is None or vdpa.vhost_device is None:
        return None
    return f"/dev/{vdpa.vhost_device}"


@register
class Vdpa(DriverFamily):
    name = "vdpa"

    def applies(self, device: PoolDevice) -> bool:
        return device.vdpa_type is not None and device.function.vdpa is not None

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        path = vhost_path(device)
        return () if path is None else (Spec(path, path, "mrw"),)

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        path = vhost_path(device)
        return {"vdpa": {} if path is None else {"mount": path}}

    def devinfo_document(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        vdpa = device.function.vdpa
        assert vdpa is not None and device.vdpa_type is not None  # applies() said so
        entry = {"parent-device": vdpa.name, "driver": device.vdpa_type.value}
        path = vhost_path(device)
        if path is not None:
            entry["path"] = path
        entry["pci-address"] = device.function.address
        if device.function.pf_address:
            entry["pf-pci-address"] = device.function.pf_address
        return {"type": "vdpa", "version": NPWG_VERSION, "vdpa": entry}
