"""RDMA (``isRdma``; plugin worker process): the function's ``/dev/infiniband/*`` char devices."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import register

_INFO_KEYS = ("uverbs", "umad", "issm", "rdma_cm")


@register
class Rdma(DriverFamily):
    name = "rdma"

    def applies(self, device: PoolDevice) -> bool:
        return device.is_rdma

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        return tuple(Spec(p, p) for p in device.function.rdma_char_devices)

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        entry: dict[str, str] = {}
        for path in device.function.rdma_char_devices:
            base = os.path.basename(path)
            key = next((k for k in _INFO_KEYS if base.startswith(k)), None)
            if key is not None and key not in entry:
                entry[key] = path
        if device.function.rdma_devices:
            entry["rdma_dev"] = device.function.rdma_devices[0]
        return {"rdma": entry}

    def devinfo(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, str]:
        rdma = device.function.rdma_devices
        return {"rdma-device": rdma[0]} if rdma else {}
