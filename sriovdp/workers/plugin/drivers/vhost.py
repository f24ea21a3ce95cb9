"""vhost-net (``needVhostNet``; plugin worker process): ``/dev/vhost-net`` and ``/dev/net/tun``.

Each node is given only when it exists on the host (a missing one would fail the container);
a missing one is reported (``registry.report_missing_nodes``, ``discover``). The host's nodes are
looked up under ``--dev-root``: the DaemonSet mounts the host's ``/dev`` read-only there, since
the container's own ``/dev`` is not the host's. ``/dev/vhost-net`` and ``/dev/net/tun`` are
usually static nodes (``kmod static-nodes``) whose module loads on first open, so sysfs
(``class/misc``) cannot stand in for them.
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

    def nodes(self, device: PoolDevice, ctx: DriverContext) -> tuple[str, ...]:
        return (VHOST_NET, TUN)

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        entry = {}
        if ctx.dev_exists(VHOST_NET):
            entry["net-mount"] = VHOST_NET
        if ctx.dev_exists(TUN):
            entry["tun-mount"] = TUN
        return {"vhost": entry}

    def devinfo(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, str]:
        return {"vhost-net": VHOST_NET} if ctx.dev_exists(VHOST_NET) else {}
