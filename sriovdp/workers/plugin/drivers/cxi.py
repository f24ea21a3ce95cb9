"""Slingshot CXI functions (HPE Cassini NICs; plugin worker process): ``/dev/cxiN``.

A function with a CXI device (``cxi_user/cxi<N>`` below it, what libcxi reads) gets its char
device, and ``_INFO`` ``{"cxi": {"dev-mount": "/dev/cxiN"}}``, as RDMA functions get their
``/dev/infiniband`` nodes. Like upstream, the spec is given whether or not the node exists (the
kubelet resolves host paths); a missing one is reported, as for every family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import register


@register
class Cxi(DriverFamily):
    name = "cxi"

    def applies(self, device: PoolDevice) -> bool:
        return device.aux is None and bool(device.function.cxi_devices)

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        return tuple(Spec(f"/dev/{c}", f"/dev/{c}") for c in device.function.cxi_devices)

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        return {"cxi": {"dev-mount": f"/dev/{device.function.cxi_devices[0]}"}}
