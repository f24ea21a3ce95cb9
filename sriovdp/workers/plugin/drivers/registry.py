"""The registry of driver families (plugin worker process).

Families register themselves with :func:`register` when their module is imported; the built-in
ones are imported by ``drivers/__init__``, others with ``--driver-module`` (or directly in tests).
Core modules only ever ask :func:`families_for`, so a new device type touches no core module.
"""

from __future__ import annotations

import importlib
import threading
from typing import TypeVar

from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.drivers.base import DriverFamily

_F = TypeVar("_F", bound=type[DriverFamily])

_lock = threading.Lock()
_families: dict[str, DriverFamily] = {}


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
