"""The device-type interface every driver family implements (plugin worker process).

A driver family turns one :class:`PoolDevice` into what Allocate needs: device specs (the ``/dev``
nodes a container gets), entries of the ``PCIDEVICE_<...>_INFO`` JSON and extra keys of the NPWG
device-info ``pci`` object. Several families may apply to one device (``vfio`` plus ``vhost``;
``netdev`` plus ``rdma``). Everything is computed once per device, before any Allocate call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sriovdp.shared.model import PoolDevice


@dataclass(frozen=True, slots=True)
class Spec:
    """One device node for the container (``DeviceSpec``); permissions are cgroup ``rw``."""

    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True, slots=True)
class DriverContext:
    """Facts about the host a family may need; ``dev_root`` is ``/`` on a real node."""

    dev_root: Path = Path("/")

    def dev_exists(self, path: str) -> bool:
        """Whether ``/dev/...`` exists on the host (looked up under ``dev_root``)."""
        return os.path.exists(self.dev_root / path.lstrip("/"))


class DriverFamily:
    """Base of every device type. Subclasses override :meth:`applies` and what they contribute.

    Methods must be pure functions of the device and the context: they run once per device at
    start and after every rescan, never during Allocate.
    """

    #: unique name, used in logs and by the registry
    name: ClassVar[str] = ""

    def applies(self, device: PoolDevice) -> bool:
        raise NotImplementedError

    def specs(self, device: PoolDevice, ctx: DriverContext) -> tuple[Spec, ...]:
        return ()

    def nodes(self, device: PoolDevice, ctx: DriverContext) -> tuple[str, ...]:
        """Host paths of every device node this family wants for the device, whether it exists
        or not (what is checked on the host); by default the host paths of :meth:`specs`."""
        return tuple(s.host_path for s in self.specs(device, ctx))

    def info(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any]:
        """Top-level keys of this device's ``_INFO`` entry, e.g. ``{"vfio": {...}}``."""
        return {}

    def devinfo(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, str]:
        """Extra keys of the NPWG device-info ``pci`` object, e.g. ``{"rdma-device": "mlx5_0"}``."""
        return {}

    def devinfo_document(self, device: PoolDevice, ctx: DriverContext) -> Mapping[str, Any] | None:
        """A device-info document of another type than ``pci`` (e.g. ``vdpa``); an empty one
        means the device gets no device-info file; None (the default): no opinion."""
        return None
