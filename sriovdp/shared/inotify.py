"""Linux inotify through ctypes, no dependency (kubelet watcher: the plugin dir; supervisor: the
config file's directory).

Owns one non-blocking, close-on-exec inotify descriptor. :meth:`Inotify.read` returns every event
waiting, decoded; callers ``poll()`` :meth:`Inotify.fileno` first. Raises ``OSError`` where the
kernel has no inotify (or the per-user instance limit is reached), so callers can fall back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

_IN_CLOEXEC = os.O_CLOEXEC
_IN_NONBLOCK = os.O_NONBLOCK
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_READ_SIZE = 64 * 1024

_NAMES = {
    IN_ACCESS: "ACCESS",
    IN_MODIFY: "MODIFY",
    IN_ATTRIB: "ATTRIB",
    IN_CLOSE_WRITE: "CLOSE_WRITE",
    IN_CLOSE_NOWRITE: "CLOSE_NOWRITE",
    IN_OPEN: "OPEN",
    IN_MOVED_FROM: "MOVED_FROM",
    IN_MOVED_TO: "MOVED_TO",
    IN_CREATE: "CREATE",
    IN_DELETE: "DELETE",
    IN_DELETE_SELF: "DELETE_SELF",
    IN_MOVE_SELF: "MOVE_SELF",
    IN_UNMOUNT: "UNMOUNT",
    IN_Q_OVERFLOW: "Q_OVERFLOW",
    IN_IGNORED: "IGNORED",
    IN_ISDIR: "ISDIR",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One inotify event; ``name`` is empty for events about the watched object itself."""

    wd: int
    mask: int
    cookie: int
    name: str

    def describe(self) -> str:
        flags = "|".join(text for bit, text in _NAMES.items() if self.mask & bit)
        return f"wd={self.wd} {flags} {self.name!r}"


def decode_events(data: bytes) -> list[Event]:
    """Decodes a buffer read from an inotify descriptor (whole events only, as the kernel gives)."""
    events: list[Event] = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        raw = data[offset : offset + length]
        offset += length
        events.append(Event(wd, mask, cookie, os.fsdecode(raw.split(b"\0", 1)[0])))
    return events


def _libc() -> ctypes.CDLL:
    # the symbols already loaded into the process, libc's among them: ``ctypes.util.find_library``
    # would run ``ldconfig -p`` in a subprocess and parse its output, for a library the process
    # has already loaded
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        raise OSError(errno.ENOSYS, "libc has no inotify_init1")
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.inotify_rm_watch.restype = ctypes.c_int
    return libc


class Inotify:
    """One inotify instance: add and remove watches, read decoded events without blocking."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self._fd: int | None = fd

    def fileno(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, "inotify instance is closed")
        return self._fd

    def add_watch(self, path: Path | str, mask: int) -> int:
        """Watches path; returns the watch descriptor (the same one again for the same inode)."""
        wd = self._libc.inotify_add_watch(self.fileno(), os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        """Removes a watch; a watch the kernel already dropped (its object is gone) is fine."""
        if self._libc.inotify_rm_watch(self.fileno(), wd) < 0:
            code = ctypes.get_errno()
            if code != errno.EINVAL:
                raise OSError(code, f"inotify_rm_watch: {os.strerror(code)}")

    def read(self) -> list[Event]:
        """Every event waiting; an empty list when none is."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fileno(), _READ_SIZE)
            except BlockingIOError:
                return events
            if not data:
                return events
            events += decode_events(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
