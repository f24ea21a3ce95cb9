"""NPWG device-info files (spec 1.1.0) of this pool (plugin worker process: written by the
Allocate handler on ``grpc-loop``, pruned by ``MainThread``).

Written at Allocate, atomically (temp file in the same directory, then rename), one file per
device; the body is precomputed by ``allocation``. The directory is on tmpfs on a real node, so no
fsync. A failed write (read-only directory, disk full) is logged by the caller, counted here, and
never fails the Allocate.

A file lives as long as a pod holds its device: Multus and the SR-IOV CNI read it when a pod's
sandbox is (re)created, long after Allocate. :meth:`DevInfoWriter.prune` removes the files of the
pool's resource whose device the kubelet's checkpoint does not list (the worker calls it at start,
when the checkpoint changes, and at stop); nothing else removes a file. A file written or touched
within :data:`ALLOCATE_GRACE_S` is kept even so: the kubelet records an allocation only after
every device plugin of the container answered, and a checkpoint written in between (another
pool's list update) does not list it yet.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from sriovdp.workers.plugin.allocation import Prepared, devinfo_file_name

#: a file this young is kept whatever the checkpoint says (see the module's docstring)
ALLOCATE_GRACE_S = 60.0
SUFFIX = "-device.json"
#: the id part of a file name left by an earlier process, for devices no longer in the pool: a
#: PCI address has no "-", so ``<resource>-<address>-device.json`` parses one way only
_PCI_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def write_atomic(path: Path, body: bytes, mode: int = 0o644) -> None:
    """Writes ``body`` to ``path`` via a temp file and rename (readers never see a torn file),
    with exactly ``mode``: these files are for other components (Multus and the CNI, the
    container runtime), and the supervisor's umask (077) would otherwise make them 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, body)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_public_dir(directory: Path, mode: int = 0o755) -> None:
    """Creates ``directory`` and its missing parents with exactly ``mode`` (the readers of the
    files in it need to get in, whatever the umask); directories that exist are left alone."""
    missing: list[Path] = []
    at = directory
    while not at.is_dir():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode)
        except FileExistsError:
            continue  # made in between (another worker of the same directory)
        os.chmod(path, mode)


class DevInfoWriter:
    """Owns the device-info files of one pool."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.failures = 0
        self.last_error: str | None = None
        self._written: set[str] = set()
        #: Allocate writes and prune's check-then-remove never interleave
        self._lock = threading.Lock()
        self._dir_ready = False

    def write(self, entries: Iterable[Prepared]) -> list[str]:
        """Writes the files of allocated devices; returns the errors (empty when all went well).

        A file this process already wrote with the same (immutable) body is touched, not
        rewritten: its modification time is the last Allocate, which :meth:`prune` goes by.
        """
        errors: list[str] = []
        for entry in entries:
            if entry.devinfo_body is None:
                continue
            path = self.directory / entry.devinfo_name
            with self._lock:
                if entry.devinfo_name in self._written:
                    try:
                        os.utime(path)
                        continue
                    except OSError:
                        pass  # gone: write it again
                try:
                    if not self._dir_ready:
                        make_public_dir(self.directory)
                        self._dir_ready = True
                    write_atomic(path, entry.devinfo_body)
                except OSError as exc:
                    errors.append(f"{path}: {exc.strerror or exc}")
                    continue
                self._written.add(entry.devinfo_name)
        if errors:
            with self._lock:
                self.failures += len(errors)
                self.last_error = errors[-1]
        return errors

    def written(self) -> list[Path]:
        with self._lock:
            return sorted(self.directory / n for n in self._written)

    def pool_files(self, resource: str, known_ids: Iterable[str]) -> dict[str, str]:
        """The device-info files of ``resource`` in the directory: file name -> device id.

        ``known_ids`` (the pool's devices) name files exactly; any other file of the resource
        whose id part is a PCI address is one too (a device that has left the pool since).
        """
        known = {devinfo_file_name(resource, i): i for i in known_ids}
        prefix = devinfo_file_name(resource, "")[: -len("-" + SUFFIX)] + "-"
        try:
            names = os.listdir(self.directory)
        except OSError:
            return {}
        out: dict[str, str] = {}
        for name in names:
            if name in known:
                out[name] = known[name]
            elif name.startswith(prefix) and name.endswith(SUFFIX):
                middle = name[len(prefix) : -len(SUFFIX)]
                if _PCI_ADDRESS.fullmatch(middle):
                    out[name] = middle
        return out

    def prune(
        self,
        resource: str,
        held: set[str],
        known_ids: Iterable[str],
        grace: float = ALLOCATE_GRACE_S,
    ) -> tuple[list[str], int]:
        """Removes the files of ``resource`` whose device is not in ``held`` (the checkpoint's
        ids) and that are older than ``grace`` seconds. Returns the removed ids and how many
        files were kept only for being young (the caller checks again later)."""
        removed: list[str] = []
        young = 0
        with self._lock:
            now = time.time()
            for name, device_id in sorted(self.pool_files(resource, known_ids).items()):
                if device_id in held:
                    continue
                path = self.directory / name
                try:
                    if now - os.stat(path).st_mtime < grace:
                        young += 1
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    self._written.discard(name)
                    continue
                except OSError:
                    continue  # read-only directory: nothing to do about it here
                self._written.discard(name)
                removed.append(device_id)
        return removed, young
