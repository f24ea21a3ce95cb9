"""Watching the config file (supervisor process): ``run --watch-config`` applies a changed file as
``reload`` does.

A ConfigMap update reaches a pod as an atomic swap of symlinks: the file is
``config.json -> ..data/config.json``, and the kubelet writes a new timestamped directory, points
``..data_tmp`` at it and renames that over ``..data``. An operator's editor writes the file in
place or renames a new one over it. :class:`ConfigWatch` covers all of these with inotify on the
directory that names the file (and on the directory of the file it resolves to, when that is
another), and decides on content: after a burst of events settles (``debounce``), it reads the
file and reports a change only when the bytes differ from the last ones it reported (or those the
supervisor started with). A file that cannot be read at that moment is looked at again at the
next event. Where inotify is unavailable, it checks every ``poll_interval`` seconds instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sriovdp.shared import inotify

log = logging.getLogger(__name__)

_MASK = (
    inotify.IN_CREATE
    | inotify.IN_MOVED_TO
    | inotify.IN_MOVED_FROM
    | inotify.IN_CLOSE_WRITE
    | inotify.IN_DELETE
    | inotify.IN_ATTRIB
)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ConfigWatch:
    """Tells the supervisor's loop when the config file's content has changed."""

    def __init__(
        self,
        path: Path,
        debounce: float = 0.5,
        poll_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.debounce = debounce
        self.poll_interval = poll_interval
        self._clock = clock
        self._last = _digest(path)
        self._due: float | None = None
        self._notify: inotify.Inotify | None = None
        self._watched: set[Path] = set()

    def open(self) -> None:
        """Starts watching; falls back to polling (logged) where inotify cannot be had."""
        try:
            notify = inotify.Inotify()
        except OSError as exc:
            self._poll_instead(f"no inotify ({exc})")
            return
        try:
            notify.add_watch(self.path.parent, _MASK | inotify.IN_ONLYDIR)
        except OSError as exc:
            notify.close()
            self._poll_instead(f"cannot watch {self.path.parent}: {exc}")
            return
        self._notify = notify
        self._watched = {self.path.parent}
        self._follow()

    def _follow(self) -> None:
        """Also watches the directory the file now resolves to (after a swap, a new one), so an
        edit made there in place is seen too; one that cannot be watched is only logged."""
        target = Path(os.path.realpath(self.path)).parent
        if self._notify is None or target in self._watched:
            return
        try:
            self._notify.add_watch(target, _MASK | inotify.IN_ONLYDIR)
        except OSError as exc:
            log.debug("config watch: cannot watch %s: %s", target, exc)
            return
        self._watched.add(target)

    def _poll_instead(self, why: str) -> None:
        log.warning("config watch: %s; checking the file every %gs", why, self.poll_interval)
        self._due = self._clock() + self.poll_interval

    def fileno(self) -> int | None:
        return self._notify.fileno() if self._notify is not None else None

    def on_readable(self) -> None:
        """Events arrived: look at the file once they have settled."""
        if self._notify is not None and self._notify.read():
            self._due = self._clock() + self.debounce

    def deadline(self) -> float | None:
        """When :meth:`changed` wants to be asked next (None: only after an event)."""
        return self._due

    def changed(self) -> bool:
        """True once per new content of the file, when the settle time is over."""
        now = self._clock()
        if self._due is None or now < self._due:
            return False
        self._due = now + self.poll_interval if self._notify is None else None
        self._follow()
        digest = _digest(self.path)
        if digest is None or digest == self._last:
            return False
        self._last = digest
        return True

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
