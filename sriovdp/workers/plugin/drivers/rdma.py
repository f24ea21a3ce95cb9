"""RDMA (``isRdma``; plugin worker process): the function's ``/dev/infiniband/*`` char devices.

The device's own ``uverbsN``, ``umadN``, ``issmN`` plus the node-wide ``/dev/infiniband/rdma_cm``
(an auxiliary device's own, not its parent's); ``_INFO`` and device-info name the RDMA device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import register

_INFO_KEYS = ("uverbs", "umad", "issm", "rdma_cm")
RDMA_CM = "/dev/infiniband/rdma_cm"


def char_devices(device: PoolDevice) -> tuple[str, ...]:
    own = device.rdma_char_devices
    return own if RDMA_CM in own else (*own, RDMA_CM)


@register
class Rdma(DriverFamily):
    name = "rdma"

    def applies(self, device: PoolDevice) -> bool:
        return device.is_rdma

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        return tuple(Spec(p, p) for p in char_devices(device))

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        entry: dict[str, str] = {}
        for path in char_devices(device):
            base = os.path.basename(path)
            key = next((k for k in _INFO_KEYS if base.startswith(k)), None)
            if key is not None and key not in entry:
                entry[key] = path
        if device.rdma_devices:
            entry["rdma_dev"] = device.rdma_devices[0]
        return {"rdma": entry}

    def devinfo(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, str]:
        rdma = device.rdma_devices
        return {"rdma-device": rdma[0]} if rdma else {}
