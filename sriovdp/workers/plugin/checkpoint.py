"""The kubelet's device checkpoint, read to learn which devices pods hold (plugin worker process,
``MainThread``).

The kubelet records every allocation in ``kubelet_internal_checkpoint`` in its device-plugin
directory (JSON, rewritten through a temp file and a rename after every allocation, removal and
device list update)::

    {"Data": {"PodDeviceEntries": [{"PodUID": "...", "ContainerName": "...",
                                    "ResourceName": "intel.com/sriov_net_A",
                                    "DeviceIDs": {"0": ["0000:03:02.1"]}, "AllocResp": "..."}],
              "RegisteredDevices": {"intel.com/sriov_net_A": ["0000:03:02.1", ...]}},
     "Checksum": 1234567890}

``DeviceIDs`` maps a NUMA node (``"-1"``: none) to ids in kubelets since 1.20 and is a plain list
before; Go writes an empty slice or map as ``null``. The checksum is computed by the kubelet over
its own Go structs and is not checked here. It is the source of truth for device-info files: a
device it lists for our resource is held by a pod. Anything unexpected makes :func:`read_held`
raise :class:`CheckpointError` naming the file, the field and the value, and the caller then
removes nothing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "kubelet_internal_checkpoint"
#: far above any real checkpoint (a few hundred bytes per container): a larger file is not one
MAX_BYTES = 64 * 1024 * 1024


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable or of a shape this reader does not know."""


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What tells one version of the file from the next (the kubelet renames a new file in)."""

    inode: int
    ctime_ns: int
    mtime_ns: int
    size: int


def identity(path: Path) -> FileIdentity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileIdentity(st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _device_ids(where: str, value: Any) -> list[str]:
    """``DeviceIDs``: a list of ids (old kubelets), a map of NUMA node -> ids, or null."""
    if value is None:
        return []
    if isinstance(value, list):
        lists: list[tuple[str, Any]] = [(where, value)]
    elif isinstance(value, dict):
        lists = []
        for node, ids in value.items():
            try:
                int(node)
            except ValueError:
                raise CheckpointError(f"{where}: NUMA node {_show(node)} is not a number") from None
            lists.append((f"{where}.{node}", ids))
    else:
        raise CheckpointError(f"{where}: {_show(value)} is neither a list nor a map of lists")
    out: list[str] = []
    for path, ids in lists:
        if ids is None:
            continue
        if not isinstance(ids, list):
            raise CheckpointError(f"{path}: {_show(ids)} is not a list of device ids")
        for i, device_id in enumerate(ids):
            if not isinstance(device_id, str):
                raise CheckpointError(f"{path}[{i}]: {_show(device_id)} is not a device id")
            out.append(device_id)
    return out


def held_devices(doc: Any) -> dict[str, set[str]]:
    """Device ids held by pods, per resource name, from a decoded checkpoint document."""
    if not isinstance(doc, dict):
        raise CheckpointError(f"top level: {_show(doc)} is not an object")
    data = doc.get("Data")
    if not isinstance(data, dict):
        raise CheckpointError(f"Data: {_show(data)} is not an object")
    if "PodDeviceEntries" not in data:
        raise CheckpointError("Data.PodDeviceEntries: missing")
    entries = data["PodDeviceEntries"]
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise CheckpointError(f"Data.PodDeviceEntries: {_show(entries)} is not a list")
    held: dict[str, set[str]] = {}
    for n, entry in enumerate(entries):
        where = f"Data.PodDeviceEntries[{n}]"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: {_show(entry)} is not an object")
        resource = entry.get("ResourceName")
        if not isinstance(resource, str):
            raise CheckpointError(f"{where}.ResourceName: {_show(resource)} is not a string")
        if "DeviceIDs" not in entry:
            raise CheckpointError(f"{where}.DeviceIDs: missing")
        ids = _device_ids(f"{where}.DeviceIDs", entry["DeviceIDs"])
        held.setdefault(resource, set()).update(ids)
    return held


def read_held(path: Path) -> dict[str, set[str]]:
    """Reads and checks the checkpoint; raises :class:`CheckpointError` with the reason."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{path}: not JSON: {str(exc)[:80]}") from None
    try:
        return held_devices(doc)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


class HeldDevices:
    """The devices pods hold for one resource, re-read only when the checkpoint file changed.

    :meth:`refresh` returns the held ids, or None when the checkpoint cannot be trusted (then
    nothing may be removed); each distinct problem is logged once, as one warning.
    """

    def __init__(self, plugin_dir: Path, resource: str) -> None:
        self.path = plugin_dir / CHECKPOINT_NAME
        self.resource = resource
        self._seen: FileIdentity | None = None
        self._held: set[str] | None = None
        self._problem: str | None = None

    def refresh(self, force: bool = False) -> tuple[set[str] | None, bool]:
        """``(held ids or None, whether the file changed since the last call)``."""
        ident = identity(self.path)
        if not force and ident is not None and ident == self._seen:
            return self._held, False
        self._seen = ident
        try:
            held = read_held(self.path).get(self.resource, set())
        except CheckpointError as exc:
            self._held = None
            if str(exc) != self._problem:
                self._problem = str(exc)
                log.warning(
                    "kubelet checkpoint not usable, keeping every device-info file: %s", exc
                )
            return None, True
        if self._problem is not None:
            log.info("kubelet checkpoint %s readable again", self.path)
            self._problem = None
        self._held = held
        return held, True
