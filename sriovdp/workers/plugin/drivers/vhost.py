"""vhost-net (``needVhostNet``; plugin worker process): ``/dev/vhost-net`` and ``/dev/net/tun``.

Each node is given only when it exists on the host (a missing one would fail the container).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily, Spec
from sriovdp.workers.plugin.drivers.registry import register

VHOST_NET = "/dev/vhost-net"
TUN = "/dev/net/tun"


@register
class Vhost(DriverFamily):
    name = "vhost"

    def applies(self, device: PoolDevice) -> bool:
        return device.need_vhost_net

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        return tuple(Spec(p, p) for p in (VHOST_NET, TUN) if ctx.dev_exists(p))

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        entry = {}
        if ctx.dev_exists(VHOST_NET):
            entry["net-mount"] = VHOST_NET
        if ctx.dev_exists(TUN):
            entry["tun-mount"] = TUN
        return {"vhost": entry}

    def devinfo(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, str]:
        return {"vhost-net": VHOST_NET} if ctx.dev_exists(VHOST_NET) else {}
