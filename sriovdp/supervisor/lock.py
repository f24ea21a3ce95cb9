"""The run directory and its lock (supervisor process).

The run dir (default ``/run/sriov-dp``) holds the bus and control sockets; it is created mode 0700
and must belong to us. :class:`RunDirLock` takes an exclusive ``flock`` on ``supervisor.lock``
*before* anything binds: libzmq silently replaces an existing ipc socket file, so a second
supervisor that bound first would steal the first one's bus. A second supervisor gets
:class:`LockedError` (exit code ``LOCKED``) and touches nothing. Socket files left behind by a
predecessor that was SIGKILLed are stale by definition once we hold the lock, and are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from sriovdp.shared.bus import RunDir


class LockedError(RuntimeError):
    """Another supervisor holds the run dir."""


class RunDirError(RuntimeError):
    """The run dir cannot be used (not a directory, someone else's, not writable)."""


class RunDirLock:
    """Owns the run dir lock for the life of the supervisor."""

    def __init__(self, path: Path) -> None:
        self.run_dir = RunDir(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        path = self.run_dir.path
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = path.lstat()
        except OSError as exc:
            raise RunDirError(f"run dir {path}: {exc.strerror or exc}") from exc
        if not stat.S_ISDIR(info.st_mode):
            raise RunDirError(f"run dir {path} is not a directory")
        if info.st_uid != os.geteuid():
            raise RunDirError(f"run dir {path} belongs to uid {info.st_uid}, not to us")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(path, 0o700)
        try:
            fd = os.open(self.run_dir.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RunDirError(f"lock file {self.run_dir.lock}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise LockedError(
                f"run dir {path} is in use by another supervisor (pid {holder}); "
                "stop it first or use another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        self.remove_sockets()  # stale: whoever made them no longer holds the lock

    def remove_sockets(self) -> None:
        rd = self.run_dir
        for sock in (rd.bus_in, rd.bus_out, rd.control):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()

    def release(self) -> None:
        """Removes the sockets and the lock file, then lets go of the lock."""
        if self._fd is None:
            return
        self.remove_sockets()
        with contextlib.suppress(FileNotFoundError):
            self.run_dir.lock.unlink()
        os.close(self._fd)
        self._fd = None
