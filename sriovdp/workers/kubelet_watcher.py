"""Kubelet watcher process: owns the identity of ``kubelet.sock`` and of the plugin sockets.

``python -m sriovdp.workers kubelet-watcher --name N --run-dir R --plugin-dir D``. Watches the
device-plugin directory with inotify and publishes:

- :class:`~sriovdp.shared.messages.KubeletSocketState` (retained) at start and whenever
  ``kubelet.sock`` appears, disappears or is replaced. ``generation`` grows by one each time a
  ``kubelet.sock`` appears or is replaced by a new file: a plugin worker registers again whenever
  the generation differs from the one it registered under. A restarted watcher continues the
  generation it finds retained on the bus (unchanged if the same file is still there).
- :class:`~sriovdp.shared.messages.PluginSocketDeleted` when any other socket file in the directory
  is deleted or moved away (the kubelet's restart deletes every plugin socket).
- :class:`~sriovdp.shared.messages.KubeletCheckpointState` (retained) at start and whenever the
  kubelet's device checkpoint (``kubelet_internal_checkpoint``) is written (the kubelet renames a
  temp file over it; a write in place is seen when the file is closed) or removed: plugin workers
  then read it again to learn which devices pods hold. Only its identity travels, not its content.

The directory itself may be missing at start or removed later: the nearest existing ancestor is
watched until it is back, then everything is rescanned. An inotify queue overflow also triggers a
rescan. Where inotify is unavailable the directory is polled instead (logged once).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zmq

from sriovdp.launch import runtime
from sriovdp.shared import inotify, logs
from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import (
    KubeletCheckpointState,
    KubeletSocketState,
    Message,
    PluginSocketDeleted,
    WorkerHeartbeat,
    WorkerReady,
)
from sriovdp.shared.model import DEFAULT_PLUGIN_DIR

log = logging.getLogger(__name__)

KUBELET_SOCKET = "kubelet.sock"
CHECKPOINT = "kubelet_internal_checkpoint"
DEFAULT_HEARTBEAT_INTERVAL = 2.0
DEFAULT_POLL_INTERVAL = 0.5
#: how long the watcher waits at start for the retained state of an earlier instance
ADOPT_TIMEOUT = 0.3

_DIR_MASK = (
    inotify.IN_CREATE
    | inotify.IN_CLOSE_WRITE
    | inotify.IN_DELETE
    | inotify.IN_MOVED_FROM
    | inotify.IN_MOVED_TO
    | inotify.IN_DELETE_SELF
    | inotify.IN_MOVE_SELF
    | inotify.IN_ONLYDIR
)
_ANCESTOR_MASK = (
    inotify.IN_CREATE
    | inotify.IN_MOVED_TO
    | inotify.IN_DELETE_SELF
    | inotify.IN_MOVE_SELF
    | inotify.IN_ONLYDIR
)
_DIR_GONE = inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_IGNORED | inotify.IN_UNMOUNT


#: how long a read waits for the second half of a rename (see :func:`read_batch`)
MOVE_PAIR_WAIT = 0.1


def read_batch(notifier: inotify.Inotify) -> list[inotify.Event]:
    """Every event waiting, and never half of a rename.

    The kernel queues a rename's IN_MOVED_FROM and IN_MOVED_TO one after the other, but a read
    can fall between the two. The pair tells what a name created and renamed before it could be
    looked at was (a plugin socket, or the kubelet's checkpoint written under a temporary name),
    so a batch that ends in IN_MOVED_FROM waits briefly for its IN_MOVED_TO: microseconds, or
    :data:`MOVE_PAIR_WAIT` for a rename out of the directory, which has none.
    """
    events = notifier.read()
    deadline = time.monotonic() + MOVE_PAIR_WAIT
    while events and events[-1].mask & inotify.IN_MOVED_FROM:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([notifier.fileno()], [], [], left)[0]:
            break
        events += notifier.read()
    return events


class Publisher(Protocol):
    def publish(self, message: Message) -> None: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """A file of the plugin directory as lstat saw it.

    ``inode`` alone does not identify a file: ext4 hands a freed inode number to the next file
    created, so a kubelet.sock deleted and created again often has the same number. The change
    time, set when the file is created, tells the two apart.
    """

    inode: int
    ctime_ns: int
    is_socket: bool


def scan(directory: Path) -> dict[str, Entry] | None:
    """Every entry of the directory, None if the directory does not exist."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    out: dict[str, Entry] = {}
    for name in names:
        entry = _lstat(directory / name)
        if entry is not None:
            out[name] = entry
    return out


def _lstat(path: Path) -> Entry | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Entry(st.st_ino, st.st_ctime_ns, stat.S_ISSOCK(st.st_mode))


def _present(entry: Entry, generation: int) -> KubeletSocketState:
    return KubeletSocketState(True, entry.inode, generation, entry.ctime_ns)


class PluginDirWatcher:
    """The plugin directory's sockets as last published, and the rules that change them.

    Inotify events go to :meth:`on_events`; :meth:`rescan` compares the directory with what was
    published (after a queue overflow, when the directory comes back, and on each tick in polling
    mode). Every creation event of kubelet.sock is a new generation, also when the file is gone
    again before it could be looked at: each one is a kubelet that started.
    """

    def __init__(
        self,
        plugin_dir: Path,
        bus: Publisher,
        notifier: inotify.Inotify | None,
        adopted: KubeletSocketState | None = None,
    ) -> None:
        self.plugin_dir = plugin_dir
        self.kubelet = KubeletSocketState(False, 0, 0)
        self._kubelet_entry: Entry | None = None
        self._bus = bus
        self._notifier = notifier
        self._sockets: dict[str, Entry] = {}
        #: created names that were gone before lstat could say what they were
        self._unknown: set[str] = set()
        self._dir_wd: int | None = None
        self._ancestor_wd: int | None = None
        self._adopted = adopted
        self.checkpoint = KubeletCheckpointState(False, 0, 0)
        self.rescans = 0
        self.overflows = 0

    # --- kubelet.sock ----------------------------------------------------------------------

    def _kubelet_found(self, entry: Entry | None, created: bool) -> None:
        """kubelet.sock is (or, if ``created``, was just) there: a new generation unless it is
        the file already announced."""
        if entry is not None and entry == self._kubelet_entry:
            return  # the file we already announced (a deletion in between would have cleared it)
        if entry is None and not created:
            return
        self._kubelet_entry = entry
        gen = self.kubelet.generation + 1
        if entry is None:  # appeared and vanished before we looked
            self._set_kubelet(KubeletSocketState(False, 0, gen))
        else:
            self._set_kubelet(_present(entry, gen))

    def _kubelet_absent(self) -> None:
        self._kubelet_entry = None
        if self.kubelet.present:
            self._set_kubelet(KubeletSocketState(False, 0, self.kubelet.generation))

    def _set_kubelet(self, state: KubeletSocketState) -> None:
        self.kubelet = state
        log.info(
            "kubelet.sock %s (inode=%d generation=%d)",
            "present" if state.present else "absent",
            state.inode,
            state.generation,
        )
        self._bus.publish(state)

    # --- the kubelet's device checkpoint -----------------------------------------------------

    def _checkpoint_seen(self, entry: Entry | None, always: bool = False) -> None:
        """Publishes the checkpoint's identity if it differs from the one last published."""
        if entry is None or entry.is_socket:
            state = KubeletCheckpointState(False, 0, 0)
        else:
            state = KubeletCheckpointState(True, entry.inode, entry.ctime_ns)
        if always or state != self.checkpoint:
            self.checkpoint = state
            log.debug(
                "checkpoint %s (inode=%d)", "written" if state.present else "gone", state.inode
            )
            self._bus.publish(state)

    # --- plugin sockets ----------------------------------------------------------------------

    def _socket_gone(self, name: str, moved_to: str | None = None) -> None:
        entry = self._sockets.pop(name, None)
        inode = entry.inode if entry is not None else 0
        if entry is None:
            if name not in self._unknown:
                return
            self._unknown.discard(name)
            # created and gone (or moved) before it could be looked at
            target = _lstat(self.plugin_dir / moved_to) if moved_to else None
            if target is not None and not target.is_socket:
                return  # a regular file renamed into place (the kubelet's checkpoint)
            inode = target.inode if target is not None else 0
        log.info("plugin socket %s deleted (inode=%d)", name, inode)
        self._bus.publish(PluginSocketDeleted(name, inode))

    def _entry_appeared(self, name: str, created: bool) -> None:
        """``name`` was created (``created``) or renamed into the directory."""
        if name == KUBELET_SOCKET and created and self.kubelet.present:
            # A socket cannot be created over an existing name, so with no removal seen since,
            # this is the creation of the file already announced: a rescan (at start, or when
            # the directory came back) found it before its event was read. Looking at the
            # directory now could only show a later file, whose own creation event follows.
            return
        entry = _lstat(self.plugin_dir / name)
        if name == CHECKPOINT:
            self._checkpoint_seen(entry)
            return
        if name == KUBELET_SOCKET:
            self._kubelet_found(entry, created=True)
            return
        if entry is None:
            self._unknown.add(name)
            return
        if not entry.is_socket:
            return
        old = self._sockets.get(name)
        if old is not None and old != entry:  # replaced without a delete event seen
            self._socket_gone(name)
        self._sockets[name] = entry

    def _entry_removed(self, name: str, moved_to: str | None) -> None:
        if name == CHECKPOINT:
            self._checkpoint_seen(None)
        elif name == KUBELET_SOCKET:
            self._kubelet_absent()
        else:
            self._socket_gone(name, moved_to)

    # --- whole directory ---------------------------------------------------------------------

    def start(self) -> None:
        """Arms the watches and publishes the initial state (always, also when unchanged)."""
        self._arm()
        entries = scan(self.plugin_dir) or {}
        self._sockets = {n: e for n, e in entries.items() if e.is_socket and n != KUBELET_SOCKET}
        kubelet = entries.get(KUBELET_SOCKET)
        self._checkpoint_seen(entries.get(CHECKPOINT), always=True)
        adopted = self._adopted
        self._kubelet_entry = kubelet
        if adopted is None:
            gen = 1 if kubelet is not None else 0
            self.kubelet = _present(kubelet, gen) if kubelet else KubeletSocketState(False, 0, gen)
        elif kubelet is None:
            self.kubelet = KubeletSocketState(False, 0, adopted.generation)
        elif adopted.present and (adopted.inode, adopted.ctime_ns) == (
            kubelet.inode,
            kubelet.ctime_ns,
        ):
            self.kubelet = adopted  # the same file: nobody needs to register again
        else:
            self.kubelet = _present(kubelet, adopted.generation + 1)
        self._set_kubelet(self.kubelet)

    def rescan(self) -> None:
        """Brings the published state in line with the directory as it is now."""
        self.rescans += 1
        entries = scan(self.plugin_dir) or {}
        self._unknown.clear()
        for name in [n for n in self._sockets if n not in entries]:
            self._socket_gone(name)
        for name, entry in entries.items():
            if name == KUBELET_SOCKET or not entry.is_socket:
                continue
            old = self._sockets.get(name)
            if old is not None and old != entry:
                self._socket_gone(name)
            self._sockets[name] = entry
        self._checkpoint_seen(entries.get(CHECKPOINT))
        kubelet = entries.get(KUBELET_SOCKET)
        if kubelet is None:
            self._kubelet_absent()
        else:
            self._kubelet_found(kubelet, created=False)

    def _dir_lost(self) -> None:
        log.info("plugin directory %s is gone; waiting for it", self.plugin_dir)
        for name in list(self._sockets):
            self._socket_gone(name)
        self._unknown.clear()
        self._kubelet_absent()
        self._checkpoint_seen(None)

    @property
    def notifier(self) -> inotify.Inotify | None:
        """The inotify instance, None when polling (from the start, or after giving up on it)."""
        return self._notifier

    def _arm(self) -> None:
        """Watches the plugin dir (or an ancestor while it is missing); polls if it cannot."""
        if self._notifier is None:
            return
        try:
            self._arm_inotify()
        except OSError as exc:  # e.g. ENOSPC: the per-user watch limit is reached
            log.warning("cannot watch %s (%s): polling it instead", self.plugin_dir, exc)
            self._notifier.close()
            self._notifier = None
            self._dir_wd = self._ancestor_wd = None

    def _arm_inotify(self) -> None:
        assert self._notifier is not None
        for _ in range(64):  # bounded: each pass either watches the dir or one ancestor
            try:
                self._dir_wd = self._notifier.add_watch(self.plugin_dir, _DIR_MASK)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise
                self._dir_wd = None
            else:
                self._drop_ancestor_watch()
                return
            ancestor = self.plugin_dir.parent
            while not ancestor.is_dir() and ancestor != ancestor.parent:
                ancestor = ancestor.parent
            try:
                wd = self._notifier.add_watch(ancestor, _ANCESTOR_MASK)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise
                continue  # the ancestor vanished in between: look again
            if self._ancestor_wd is not None and self._ancestor_wd != wd:
                self._drop_ancestor_watch()
            self._ancestor_wd = wd
            if not self.plugin_dir.is_dir():
                log.info(
                    "plugin directory %s does not exist; watching %s", self.plugin_dir, ancestor
                )
                return
            # the directory appeared while the ancestor watch was being set: go round again
        raise OSError(errno.ELOOP, f"cannot settle a watch for {self.plugin_dir}")

    def _drop_ancestor_watch(self) -> None:
        if self._ancestor_wd is not None and self._notifier is not None:
            if self._ancestor_wd != self._dir_wd:
                self._notifier.rm_watch(self._ancestor_wd)
            self._ancestor_wd = None

    def on_events(self, events: list[inotify.Event]) -> None:
        rearm = False
        moved_to = {
            e.cookie: e.name
            for e in events
            if e.mask & inotify.IN_MOVED_TO and e.wd == self._dir_wd
        }
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                self.overflows += 1
                log.warning("inotify queue overflow: rescanning %s", self.plugin_dir)
                rearm = True
                continue
            if event.wd == self._dir_wd and self._dir_wd is not None:
                if event.mask & _DIR_GONE:
                    if event.mask & inotify.IN_MOVE_SELF and self._notifier is not None:
                        self._notifier.rm_watch(self._dir_wd)
                    self._dir_wd = None
                    self._dir_lost()
                    rearm = True
                elif event.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
                    self._entry_appeared(event.name, created=bool(event.mask & inotify.IN_CREATE))
                elif event.mask & inotify.IN_DELETE:
                    self._entry_removed(event.name, None)
                elif event.mask & inotify.IN_MOVED_FROM:
                    self._entry_removed(event.name, moved_to.get(event.cookie))
                elif event.mask & inotify.IN_CLOSE_WRITE and event.name == CHECKPOINT:
                    self._checkpoint_seen(_lstat(self.plugin_dir / CHECKPOINT))
            elif event.wd == self._ancestor_wd and self._ancestor_wd is not None:
                if event.mask & inotify.IN_IGNORED:
                    self._ancestor_wd = None
                rearm = True
        if rearm:
            if self._dir_wd is None:
                self._arm()
            self.rescan()

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.infra_arg_parser("kubelet-watcher", DEFAULT_HEARTBEAT_INTERVAL)
    parser.add_argument("--plugin-dir", type=Path, default=Path(DEFAULT_PLUGIN_DIR))
    parser.add_argument(
        "--poll",
        action="store_true",
        help="poll the directory instead of using inotify (automatic where inotify is missing)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL, help=argparse.SUPPRESS
    )
    return parser


#: built at import, which the zygote does before it forks: the watcher only parses
PARSER = build_parser()


def parse_args(argv: list[str]) -> argparse.Namespace:
    return PARSER.parse_args(argv)


def adopt_retained(bus: BusClient, started_ns: int, timeout: float) -> KubeletSocketState | None:
    """The retained KubeletSocketState of an earlier instance, if the bus replays one in time.

    Sequence numbers come from the monotonic clock, so a message older than this process's start
    is an earlier instance's. Unsubscribes afterwards: the watcher needs nothing else.
    """
    found: KubeletSocketState | None = None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        env = bus.receive(max(1, int(left * 1000)))
        # a replay from before this process started: an earlier instance's state
        if env is not None and isinstance(env.message, KubeletSocketState) and env.seq < started_ns:
            found = env.message
            break
    bus.sub_socket.setsockopt(zmq.UNSUBSCRIBE, b"kubelet.socket.")
    return found


def main(argv: list[str]) -> int:
    """Runs the kubelet watcher until SIGTERM/SIGINT; returns the exit code."""
    runtime.die_with_parent()
    args = parse_args(argv)
    logs.setup(args.name, args.log_level, args.log_format)
    runtime.name_process("sriov-dp kubelet-watcher", "sdp-kubewatch")
    stop = runtime.StopFlag()
    stop.install(signal.SIGTERM, signal.SIGINT)

    plugin_dir: Path = args.plugin_dir.absolute()
    started_ns = time.monotonic_ns()
    bus = BusClient(args.run_dir, args.name, subscribe=["kubelet.socket."])
    notifier: inotify.Inotify | None = None
    if not args.poll:
        try:
            notifier = inotify.Inotify()
        except OSError as exc:
            log.warning(
                "inotify unavailable (%s): polling %s every %.1f s instead",
                exc,
                plugin_dir,
                args.poll_interval,
            )
    else:
        log.info("polling %s every %.1f s (--poll)", plugin_dir, args.poll_interval)
    watcher: PluginDirWatcher | None = None
    try:
        watcher = PluginDirWatcher(
            plugin_dir, bus, notifier, adopted=adopt_retained(bus, started_ns, ADOPT_TIMEOUT)
        )
        watcher.start()
        bus.publish(WorkerReady(args.name, os.getpid()))
        runtime.release_memory()
        poller = select.poll()
        poller.register(stop.fileno(), select.POLLIN)
        polled: inotify.Inotify | None = None
        hb_interval = max(0.1, args.heartbeat_interval)
        next_hb = time.monotonic()
        next_poll = time.monotonic() + args.poll_interval
        while not stop.is_set():
            notifier = watcher.notifier
            if notifier is not polled:  # started, or inotify was given up
                if polled is not None:
                    poller.unregister(polled.fileno())
                if notifier is not None:
                    poller.register(notifier.fileno(), select.POLLIN)
                polled = notifier
            now = time.monotonic()
            if now >= next_hb:
                bus.publish(WorkerHeartbeat(args.name, os.getpid()))
                next_hb = now + hb_interval
            if notifier is None and now >= next_poll:
                watcher.rescan()
                next_poll = now + args.poll_interval
            deadline = next_hb if notifier is not None else min(next_hb, next_poll)
            timeout_ms = max(0, int((deadline - time.monotonic()) * 1000) + 1)
            for fd, _ in poller.poll(timeout_ms):
                if notifier is not None and fd == notifier.fileno():
                    watcher.on_events(read_batch(notifier))
                elif fd == stop.fileno():
                    stop.drain()
    finally:
        if watcher is not None:
            watcher.close()  # closes the inotify instance it holds
        elif notifier is not None:
            notifier.close()
        bus.close()
        stop.close()
    log.info("stopping", extra={"signal": stop.signal})
    return 0
