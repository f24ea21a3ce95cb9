"""NPWG device-info files (spec 1.1.0) of this pool (plugin worker process: written by the
Allocate handler on ``grpc-loop``, removed by ``MainThread`` at stop).

Written at Allocate, atomically (temp file in the same directory, then rename), one file per
device; the body is precomputed by ``allocation``. The directory is on tmpfs on a real node, so no
fsync. A failed write (read-only directory, disk full) is logged by the caller, counted here, and
never fails the Allocate. On a graceful stop the files this process wrote are removed, and those of
the pool's devices it found at start (left by a crashed predecessor); on a crash they stay
(running pods may be using them).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from sriovdp.workers.plugin.allocation import Prepared


def write_atomic(path: Path, body: bytes, mode: int = 0o644) -> None:
    """Writes ``body`` to ``path`` via a temp file and rename (readers never see a torn file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class DevInfoWriter:
    """Owns the device-info files of one pool written by this process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.failures = 0
        self.last_error: str | None = None
        self._written: set[str] = set()
        self._adopted: set[str] = set()  # left by a crashed predecessor: removed, never trusted
        self._lock = threading.Lock()
        self._dir_ready = False

    def adopt(self, names: Iterable[str]) -> int:
        """Takes over the files of this pool that already exist (a crashed predecessor kept them
        for running pods), so that a graceful stop removes them too; returns how many."""
        found = {n for n in names if os.path.exists(self.directory / n)}
        with self._lock:
            self._adopted |= found
        return len(found)

    def write(self, entries: Iterable[Prepared]) -> list[str]:
        """Writes the files of allocated devices; returns the errors (empty when all went well).

        A file this process already wrote with the same (immutable) body is only checked for
        existence, not rewritten.
        """
        errors: list[str] = []
        for entry in entries:
            if entry.devinfo_body is None:
                continue
            path = self.directory / entry.devinfo_name
            if entry.devinfo_name in self._written and os.path.exists(path):
                continue
            try:
                if not self._dir_ready:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    self._dir_ready = True
                write_atomic(path, entry.devinfo_body)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
                continue
            with self._lock:
                self._written.add(entry.devinfo_name)
        if errors:
            with self._lock:
                self.failures += len(errors)
                self.last_error = errors[-1]
        return errors

    def written(self) -> list[Path]:
        with self._lock:
            return sorted(self.directory / n for n in self._written)

    def remove_all(self) -> int:
        """Removes the files this process wrote (graceful stop); returns how many were removed."""
        removed = 0
        with self._lock:
            names = self._written | self._adopted
            self._written, self._adopted = set(), set()
        for name in names:
            try:
                os.unlink(self.directory / name)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError:
                pass
        return removed
