"""The pool's CDI spec file (``--use-cdi``; plugin worker process, ``MainThread``).

One JSON spec per pool in ``--cdi-dir`` named ``sriov-dp_<child>.json``, kind
``<prefix>/net-pci``, one CDI device per pool device named by its PCI address, with the device
nodes its driver families give. Every device also carries one env edit naming it, so a device
without nodes (a kernel netdev) still has the non-empty edits the CDI spec requires. Written
atomically at start and after every rescan; removed on a graceful stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from sriovdp.workers.plugin.allocation import AllocationTable, cdi_kind
from sriovdp.workers.plugin.devinfo import make_public_dir, write_atomic

CDI_VERSION = "0.5.0"
_NOT_TAG = re.compile(r"[^A-Z0-9]")


def spec_path(directory: Path, child: str) -> Path:
    return directory / f"sriov-dp_{child}.json"


def spec_document(table: AllocationTable) -> dict[str, Any]:
    devices = []
    for entry in table.prepared.values():
        tag = _NOT_TAG.sub("_", entry.id.upper())
        edits: dict[str, Any] = {"env": [f"{table.env}_CDI_{tag}={entry.id}"]}
        if entry.specs:
            edits["deviceNodes"] = [
                {"path": s.container_path, "hostPath": s.host_path, "permissions": s.permissions}
                for s in entry.specs
            ]
        devices.append({"name": entry.id, "containerEdits": edits})
    return {"cdiVersion": CDI_VERSION, "kind": cdi_kind(table.pool), "devices": devices}


class CdiSpecFile:
    """Owns one pool's CDI spec file."""

    def __init__(self, directory: Path, child: str) -> None:
        self.path = spec_path(directory, child)

    def write(self, table: AllocationTable) -> None:
        """Raises OSError when the directory is not writable (the caller logs it)."""
        make_public_dir(self.path.parent)
        body = json.dumps(spec_document(table), indent=1).encode()
        write_atomic(self.path, body)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
