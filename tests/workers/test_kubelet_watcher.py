"""Kubelet watcher: the real process watching a temporary plugin directory, read over the bus.

Sockets are real unix sockets bound in the directory (what the kubelet and the plugins create);
a "kubelet restart" deletes every socket in the directory and binds a new ``kubelet.sock``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from sriovdp.shared import inotify
from sriovdp.shared.messages import (
    KubeletCheckpointState,
    KubeletSocketState,
    Message,
    PluginSocketDeleted,
    WorkerHeartbeat,
    WorkerReady,
)
from sriovdp.workers.kubelet_watcher import PluginDirWatcher, parse_args, read_batch
from tests.harness.broker import BrokerThread
from tests.workers.conftest import Listener, Proc, worker_argv

pytestmark = pytest.mark.timeout(60)


def test_options_parse_alike_with_the_parser_built_once(tmp_path: Path) -> None:
    polled = parse_args(["--run-dir", str(tmp_path), "--poll", "--plugin-dir", "dp"])
    plain = parse_args(["--run-dir", str(tmp_path), "--heartbeat-interval", "10"])
    assert (polled.poll, polled.plugin_dir, polled.name) == (True, Path("dp"), "kubelet-watcher")
    assert (plain.poll, plain.heartbeat_interval) == (False, 10.0)
    with pytest.raises(SystemExit):
        parse_args(["--poll"])  # --run-dir is required


def make_socket(path: Path) -> int:
    """Binds a unix socket file at path (left behind on close, as a crashed server leaves it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
    finally:
        s.close()
    return os.lstat(path).st_ino


def restart_kubelet(plugin_dir: Path) -> int:
    """What the kubelet does on restart: delete every socket, then serve a new kubelet.sock."""
    for entry in os.scandir(plugin_dir):
        if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
            os.unlink(entry.path)
    return make_socket(plugin_dir / "kubelet.sock")


def _start(run_dir: Path, plugin_dir: Path, procs: list[Proc], *extra: str) -> Proc:
    import subprocess

    log_path = run_dir / f"kw-{len(procs)}.log"
    argv = worker_argv("kubelet-watcher", "kw", run_dir, "--plugin-dir", str(plugin_dir), *extra)
    with log_path.open("wb") as err:
        popen = subprocess.Popen(argv, stderr=err)
    proc = Proc(popen, log_path)
    procs.append(proc)
    return proc


def _watching(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
    *extra: str,
) -> tuple[Listener, Proc]:
    """A listener on the kubelet topics, then a watcher on ``plugin_dir``, started and READY."""
    listener = listen("kubelet.", "worker.kw.")
    proc = _start(broker.run_dir, plugin_dir, procs, *extra)
    assert listener.wait_until(_ready(listener)), proc.log()
    return listener, proc


def _states(listener: Listener) -> list[KubeletSocketState]:
    return [m for m in listener.of_kind(KubeletSocketState) if isinstance(m, KubeletSocketState)]


def _deleted(listener: Listener) -> list[PluginSocketDeleted]:
    return [m for m in listener.of_kind(PluginSocketDeleted) if isinstance(m, PluginSocketDeleted)]


def _ident(state: KubeletSocketState) -> tuple[bool, int, int]:
    return (state.present, state.inode, state.generation)


def _last_state_is(listener: Listener, want: KubeletSocketState) -> Callable[[], bool]:
    """The last state is want (present, inode, generation; ctime_ns is the file's own)."""
    return lambda: bool(_states(listener)) and _ident(_states(listener)[-1]) == _ident(want)


def _ready(listener: Listener) -> Callable[[], bool]:
    return lambda: bool(listener.of_kind(WorkerReady))


@pytest.fixture
def plugin_dir(run_dir: Path) -> Path:
    path = run_dir / "device-plugins"
    path.mkdir()
    return path


def test_initial_state_then_deleted_created_and_replaced(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
) -> None:
    inode = make_socket(plugin_dir / "kubelet.sock")
    listener, proc = _watching(broker, listen, procs, plugin_dir)
    # the initial state is published before READY
    kinds = [type(e.message) for e in listener.seen]
    assert kinds.index(KubeletSocketState) < kinds.index(WorkerReady)
    assert _ident(_states(listener)[-1]) == (True, inode, 1)

    os.unlink(plugin_dir / "kubelet.sock")
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(False, 0, 1)))
    inode2 = make_socket(plugin_dir / "kubelet.sock")
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode2, 2)))

    # replaced atomically by a rename: no deletion event for kubelet.sock, still a new generation
    inode3 = make_socket(plugin_dir / "kubelet.sock.new")
    os.rename(plugin_dir / "kubelet.sock.new", plugin_dir / "kubelet.sock")
    assert inode3 != inode2
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode3, 3)))
    # the temporary name was a socket that went away: reported like any plugin socket
    assert listener.wait_until(lambda: bool(_deleted(listener)))
    assert _deleted(listener) == [PluginSocketDeleted("kubelet.sock.new", inode3)]
    assert listener.wait_until(lambda: bool(listener.of_kind(WorkerHeartbeat)))
    assert proc.terminate() == 0


def test_plugin_socket_deleted_names_the_socket_and_its_inode(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
) -> None:
    make_socket(plugin_dir / "kubelet.sock")
    early = make_socket(plugin_dir / "intel.com_pool_a-1.sock")  # there before the watcher
    (plugin_dir / "kubelet_internal_checkpoint").write_text("{}")
    listener, proc = _watching(broker, listen, procs, plugin_dir)
    late = make_socket(plugin_dir / "intel.com_pool_b-1.sock")  # created while watched
    # a sync point: once generation 2 is seen, the creation above has been looked at
    os.unlink(plugin_dir / "kubelet.sock")
    inode = make_socket(plugin_dir / "kubelet.sock")
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode, 2)))
    os.unlink(plugin_dir / "kubelet_internal_checkpoint")  # a regular file: not reported
    os.unlink(plugin_dir / "intel.com_pool_b-1.sock")
    os.unlink(plugin_dir / "intel.com_pool_a-1.sock")
    assert listener.wait_until(lambda: len(_deleted(listener)) >= 2), proc.log()
    assert _deleted(listener) == [
        PluginSocketDeleted("intel.com_pool_b-1.sock", late),
        PluginSocketDeleted("intel.com_pool_a-1.sock", early),
    ]
    assert _states(listener)[-1].generation == 2  # deleting plugin sockets changes nothing there
    assert proc.terminate() == 0


def test_directory_removed_and_recreated(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
) -> None:
    make_socket(plugin_dir / "kubelet.sock")
    plugin = make_socket(plugin_dir / "p.sock")
    listener, proc = _watching(broker, listen, procs, plugin_dir)
    shutil.rmtree(plugin_dir)
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(False, 0, 1)))
    assert listener.wait_until(lambda: PluginSocketDeleted("p.sock", plugin) in _deleted(listener))
    plugin_dir.mkdir()
    inode = make_socket(plugin_dir / "kubelet.sock")
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode, 2))), (
        proc.log()
    )
    # and the new directory is watched as the old one was
    p2 = make_socket(plugin_dir / "p2.sock")
    os.unlink(plugin_dir / "kubelet.sock")  # sync point: p2.sock was looked at before gen 3
    inode = make_socket(plugin_dir / "kubelet.sock")
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode, 3)))
    os.unlink(plugin_dir / "p2.sock")
    assert listener.wait_until(lambda: PluginSocketDeleted("p2.sock", p2) in _deleted(listener))
    assert proc.terminate() == 0


def test_directory_and_its_parent_absent_at_start(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    run_dir: Path,
) -> None:
    plugin_dir = run_dir / "kubelet" / "device-plugins"
    listener, proc = _watching(broker, listen, procs, plugin_dir)
    assert _states(listener) == [KubeletSocketState(False, 0, 0)]
    (run_dir / "kubelet").mkdir()
    plugin_dir.mkdir()
    inode = make_socket(plugin_dir / "kubelet.sock")
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode, 1))), (
        proc.log()
    )
    assert proc.terminate() == 0


def test_fifty_kubelet_restarts_each_seen(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
) -> None:
    make_socket(plugin_dir / "kubelet.sock")
    listener, proc = _watching(broker, listen, procs, plugin_dir)
    last = 0
    for i in range(50):
        for pool in range(4):
            make_socket(plugin_dir / f"pool{pool}-{i}.sock")
        last = restart_kubelet(plugin_dir)
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, last, 51)))
    # every restart is a generation; one whose kubelet.sock was already replaced when the watcher
    # looked is announced as absent, never skipped
    generations = [s.generation for s in _states(listener)]
    assert sorted(set(generations)) == list(range(1, 52))
    assert generations == sorted(generations)
    assert listener.wait_until(lambda: len(_deleted(listener)) == 200)
    assert {d.name for d in _deleted(listener)} == {
        f"pool{p}-{i}.sock" for p in range(4) for i in range(50)
    }
    # a worker that starts now learns the current state from the broker's last-value cache
    late = listen("kubelet.socket.")
    assert late.wait_until(lambda: bool(_states(late)))
    assert _ident(_states(late)[-1]) == (True, last, 51)
    assert proc.terminate() == 0


def test_restarted_watcher_continues_the_generation(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
) -> None:
    make_socket(plugin_dir / "kubelet.sock")
    listener, first = _watching(broker, listen, procs, plugin_dir)
    inode = restart_kubelet(plugin_dir)
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode, 2)))
    first.kill()
    # same kubelet.sock: the generation stays, no worker re-registers for nothing
    listener.seen.clear()
    second = _start(broker.run_dir, plugin_dir, procs)
    assert listener.wait_until(_ready(listener)), second.log()
    assert _ident(_states(listener)[-1]) == (True, inode, 2)
    second.kill()
    # the kubelet restarted while no watcher ran: the next one announces a new generation
    inode2 = restart_kubelet(plugin_dir)
    listener.seen.clear()
    third = _start(broker.run_dir, plugin_dir, procs)
    assert listener.wait_until(_ready(listener)), third.log()
    assert _ident(_states(listener)[-1]) == (True, inode2, 3)
    assert third.terminate() == 0


def test_polling_fallback_sees_the_same_changes(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
) -> None:
    listener, proc = _watching(
        broker, listen, procs, plugin_dir, "--poll", "--poll-interval", "0.05"
    )
    assert "polling" in proc.log()
    inode = make_socket(plugin_dir / "kubelet.sock")
    plugin = make_socket(plugin_dir / "p.sock")
    assert listener.wait_until(_last_state_is(listener, KubeletSocketState(True, inode, 1)))
    assert listener.wait_until(lambda: len(listener.seen) > 2)  # one more scan after the socket
    os.unlink(plugin_dir / "p.sock")
    assert listener.wait_until(
        lambda: _deleted(listener) == [PluginSocketDeleted("p.sock", plugin)]
    )
    assert proc.terminate() == 0


class FakeBus:
    """Records what the watcher publishes; checkpoint states apart from the socket messages."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.checkpoints: list[KubeletCheckpointState] = []

    def publish(self, message: Message) -> None:
        if isinstance(message, KubeletCheckpointState):
            self.checkpoints.append(message)
        else:
            self.sent.append(message)


def test_socket_created_and_deleted_before_it_was_looked_at_is_still_reported(
    plugin_dir: Path,
) -> None:
    bus = FakeBus()
    with inotify.Inotify() as notifier:
        watcher = PluginDirWatcher(plugin_dir, bus, notifier)
        watcher.start()
        make_socket(plugin_dir / "fast.sock")
        os.unlink(plugin_dir / "fast.sock")
        make_socket(plugin_dir / "kubelet.sock")
        os.unlink(plugin_dir / "kubelet.sock")
        watcher.on_events(notifier.read())
    assert bus.sent[1:] == [
        PluginSocketDeleted("fast.sock", 0),
        KubeletSocketState(False, 0, 1),  # a kubelet came and went: still a generation
    ]


def test_creation_event_of_a_socket_a_rescan_already_announced_is_no_new_generation(
    plugin_dir: Path,
) -> None:
    """A rescan (at start, or when the directory comes back) can find kubelet.sock before its
    creation event is read; by the time the event is read, that file may be gone and a new one
    there. Exactly one generation per kubelet.sock created."""
    bus = FakeBus()
    with inotify.Inotify() as notifier:
        watcher = PluginDirWatcher(plugin_dir, bus, notifier)
        watcher.start()
        first = make_socket(plugin_dir / "kubelet.sock")
        watcher.rescan()  # sees the file; its IN_CREATE is still queued
        make_socket(plugin_dir / "p2.sock")
        os.unlink(plugin_dir / "kubelet.sock")
        second = make_socket(plugin_dir / "kubelet.sock")
        watcher.on_events(notifier.read())
    states = [_ident(m) for m in bus.sent if isinstance(m, KubeletSocketState)]
    assert states == [(False, 0, 0), (True, first, 1), (False, 0, 1), (True, second, 2)]


class SplitInotify(inotify.Inotify):
    """Its first read ends just after the first IN_MOVED_FROM, as a read that falls between the
    two halves of a rename does; the rest comes with the next read (its fd is readable then)."""

    def __init__(self) -> None:
        super().__init__()
        self._rest: list[inotify.Event] | None = None
        self._ready_r, self._ready_w = os.pipe()

    def fileno(self) -> int:
        return self._ready_r if self._rest else super().fileno()

    def read(self) -> list[inotify.Event]:
        if self._rest is not None:
            rest, self._rest = self._rest, []
            return rest
        events = super().read()
        cut = next(i for i, e in enumerate(events) if e.mask & inotify.IN_MOVED_FROM) + 1
        self._rest = events[cut:]
        os.write(self._ready_w, b"x")
        return events[:cut]

    def close(self) -> None:
        super().close()
        for fd in (self._ready_r, self._ready_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def test_a_rename_split_across_two_reads_is_paired(plugin_dir: Path) -> None:
    """A socket created and renamed before it could be looked at is reported with the inode it
    has under its new name, also when the two halves of the rename come in separate reads."""
    bus = FakeBus()
    with SplitInotify() as notifier:
        watcher = PluginDirWatcher(plugin_dir, bus, notifier)
        watcher.start()
        inode = make_socket(plugin_dir / "kubelet.sock.new")
        os.rename(plugin_dir / "kubelet.sock.new", plugin_dir / "kubelet.sock")
        watcher.on_events(read_batch(notifier))
    assert bus.sent[1:] == [
        PluginSocketDeleted("kubelet.sock.new", inode),
        KubeletSocketState(True, inode, 1, os.lstat(plugin_dir / "kubelet.sock").st_ctime_ns),
    ]


def test_inotify_queue_overflow_rescans(plugin_dir: Path) -> None:
    bus = FakeBus()
    with inotify.Inotify() as notifier:
        watcher = PluginDirWatcher(plugin_dir, bus, notifier)
        watcher.start()
        assert bus.sent == [KubeletSocketState(False, 0, 0)]
        gone = make_socket(plugin_dir / "p.sock")
        watcher.on_events(notifier.read())
        # events lost in an overflow: the rescan finds what changed
        os.unlink(plugin_dir / "p.sock")
        inode = make_socket(plugin_dir / "kubelet.sock")
        notifier.read()  # dropped, as if the queue had overflowed
        watcher.on_events([inotify.Event(-1, inotify.IN_Q_OVERFLOW, 0, "")])
    assert watcher.overflows == 1
    assert bus.sent[1] == PluginSocketDeleted("p.sock", gone)
    assert isinstance(bus.sent[2], KubeletSocketState)
    assert _ident(bus.sent[2]) == (True, inode, 1)
    assert bus.sent[2].ctime_ns == os.lstat(plugin_dir / "kubelet.sock").st_ctime_ns


class FullInotify(inotify.Inotify):
    """An inotify instance whose watches are refused, as when max_user_watches is reached."""

    def add_watch(self, path: Path | str, mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_refused_watch_falls_back_to_polling(plugin_dir: Path) -> None:
    bus = FakeBus()
    watcher = PluginDirWatcher(plugin_dir, bus, FullInotify())
    watcher.start()
    assert watcher.notifier is None
    inode = make_socket(plugin_dir / "kubelet.sock")
    watcher.rescan()  # what the polling loop does
    assert isinstance(bus.sent[-1], KubeletSocketState)
    assert _ident(bus.sent[-1]) == (True, inode, 1)


def test_plugin_dir_behind_a_symlink_is_watched(plugin_dir: Path) -> None:
    link = plugin_dir.parent / "plugins-link"
    link.symlink_to(plugin_dir)
    bus = FakeBus()
    with inotify.Inotify() as notifier:
        watcher = PluginDirWatcher(link, bus, notifier)
        watcher.start()
        assert watcher.notifier is notifier
        inode = make_socket(plugin_dir / "kubelet.sock")
        watcher.on_events(notifier.read())
    assert isinstance(bus.sent[-1], KubeletSocketState)
    assert _ident(bus.sent[-1]) == (True, inode, 1)


def _checkpoints(listener: Listener) -> list[KubeletCheckpointState]:
    return [
        m for m in listener.of_kind(KubeletCheckpointState) if isinstance(m, KubeletCheckpointState)
    ]


def test_checkpoint_rewrites_are_published(
    broker: BrokerThread,
    listen: Callable[..., Listener],
    procs: list[Proc],
    plugin_dir: Path,
) -> None:
    """The kubelet renames a temp file over its checkpoint; each version is announced by its
    identity (workers read the file), and so is a write in place and the file's removal."""
    listener, proc = _watching(broker, listen, procs, plugin_dir)
    assert _checkpoints(listener)[-1] == KubeletCheckpointState(False, 0, 0)
    path = plugin_dir / "kubelet_internal_checkpoint"
    for n in range(3):
        tmp = plugin_dir / f".ckpt{n}.tmp"
        tmp.write_text(f'{{"Data": {{"PodDeviceEntries": null}}, "Checksum": {n}}}')
        os.replace(tmp, path)
        st = os.stat(path)
        want = KubeletCheckpointState(True, st.st_ino, st.st_ctime_ns)
        assert listener.wait_until(lambda w=want: _checkpoints(listener)[-1] == w), proc.log()
    with path.open("a") as f:  # in place: seen when the writer closes the file
        f.write(" ")
    st = os.stat(path)
    want = KubeletCheckpointState(True, st.st_ino, st.st_ctime_ns)
    assert listener.wait_until(lambda: _checkpoints(listener)[-1] == want), proc.log()
    path.unlink()
    gone = KubeletCheckpointState(False, 0, 0)
    assert listener.wait_until(lambda: _checkpoints(listener)[-1] == gone), proc.log()
    assert not _deleted(listener)  # a regular file is not a plugin socket
    assert proc.terminate() == 0


def test_checkpoint_changes_lost_in_an_overflow_are_found_by_the_rescan(plugin_dir: Path) -> None:
    bus = FakeBus()
    path = plugin_dir / "kubelet_internal_checkpoint"
    path.write_text("{}")
    with inotify.Inotify() as notifier:
        watcher = PluginDirWatcher(plugin_dir, bus, notifier)
        watcher.start()
        first = os.stat(path)
        assert bus.checkpoints == [KubeletCheckpointState(True, first.st_ino, first.st_ctime_ns)]
        tmp = plugin_dir / ".tmp"
        tmp.write_text("{}")
        os.replace(tmp, path)
        notifier.read()  # dropped, as if the queue had overflowed
        watcher.on_events([inotify.Event(-1, inotify.IN_Q_OVERFLOW, 0, "")])
        second = os.stat(path)
        assert bus.checkpoints[-1] == KubeletCheckpointState(
            True, second.st_ino, second.st_ctime_ns
        )
        watcher.rescan()  # nothing changed: nothing published
        assert len(bus.checkpoints) == 2
