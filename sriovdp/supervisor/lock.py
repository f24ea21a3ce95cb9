"""The run directory and its lock, and the lock on the kubelet's plugin directory (supervisor
process).

The run dir (default ``/run/sriov-dp``) holds the bus and control sockets; it is created mode 0700
and must belong to us. :class:`RunDirLock` takes an exclusive ``flock`` on ``supervisor.lock``
*before* anything binds: libzmq silently replaces an existing ipc socket file, so a second
supervisor that bound first would steal the first one's bus. A second supervisor gets
:class:`LockedError` (exit code ``LOCKED``) and touches nothing. Socket files left behind by a
predecessor that was SIGKILLed are stale by definition once we hold the lock, and are removed.

:class:`PluginDirLock` keeps two supervisors (with different run dirs) from serving the same
kubelet: it ``flock``s the plugin directory itself, not a file in it, because the kubelet deletes
every file in that directory when it starts, and a lock on a deleted file no longer stops anyone.
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


class PluginDirLock:
    """Owns an exclusive ``flock`` on the plugin directory for the life of the supervisor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Raises :class:`LockedError` when another supervisor serves the directory, and
        :class:`RunDirError` when it cannot be opened."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RunDirError(f"plugin dir {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"plugin dir {self.path} is served by another supervisor on this node "
                "(one per kubelet); stop it first or use another --plugin-dir"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
