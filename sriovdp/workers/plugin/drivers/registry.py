"""The registry of driver families (plugin worker process).

Families register themselves with :func:`register` when their module is imported; the built-in
ones are imported by ``drivers/__init__``, others with ``--driver-module`` (or directly in tests).
Core modules only ever ask :func:`families_for`, so a new device type touches no core module.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable
from typing import TypeVar

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverContext, DriverFamily

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=type[DriverFamily])

_lock = threading.Lock()
_families: dict[str, DriverFamily] = {}
#: (resource, host path) of the missing device nodes already reported by this process
_reported: set[tuple[str, str]] = set()


def register(cls: _F) -> _F:
    """Class decorator: adds one instance of the family (a later one of the same name replaces)."""
    if not cls.name:
        raise ValueError(f"driver family {cls.__qualname__} has no name")
    with _lock:
        _families[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    with _lock:
        _families.pop(name, None)


def families() -> tuple[DriverFamily, ...]:
    with _lock:
        return tuple(_families.values())


def families_for(device: PoolDevice) -> tuple[DriverFamily, ...]:
    """The families that apply to a device, in registration order."""
    return tuple(f for f in families() if f.applies(device))


def load_module(name: str) -> None:
    """Imports a module that registers more families (``--driver-module``)."""
    importlib.import_module(name)


def missing_nodes(devices: Iterable[PoolDevice], ctx: DriverContext) -> dict[str, list[str]]:
    """Host path of each device node the devices' families want that does not exist under
    ``ctx.dev_root`` -> the ids of the devices that want it, sorted by path."""
    missing: dict[str, list[str]] = {}
    exists: dict[str, bool] = {}
    for device in devices:
        for family in families_for(device):
            for path in family.nodes(device, ctx):
                if path not in exists:
                    exists[path] = ctx.dev_exists(path)
                if not exists[path] and device.id not in missing.setdefault(path, []):
                    missing[path].append(device.id)
    return dict(sorted(missing.items()))


def report_missing_nodes(resource: str, devices: Iterable[PoolDevice], ctx: DriverContext) -> None:
    """Logs each device node the pool's devices want but the host lacks, once per pool and
    node for the life of the process (a rescan that finds it missing again says nothing)."""
    for path, ids in missing_nodes(devices, ctx).items():
        if (resource, path) in _reported:
            continue
        _reported.add((resource, path))
        log.warning(
            "%s: device node %s does not exist on the host (looked up as %s); %d device(s) "
            "want it, e.g. %s",
            resource,
            path,
            ctx.dev_root / path.lstrip("/"),
            len(ids),
            ids[0],
        )
