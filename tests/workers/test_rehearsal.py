"""sriovdp.workers.rehearsal: a real plugin worker rehearsed in this process and in a forked scout,
leaving nothing behind; and the zygote's handling of a rehearsal that fails or leaves a thread."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from sriovdp.workers import codelayout, rehearsal, zygote
from sriovdp.workers.plugin import main as plugin_main


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _our_scratch_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("sriovdp-rehearsal-")}


def test_an_untraced_rehearsal_leaves_no_thread_fd_file_or_log_handler() -> None:
    root = logging.getLogger()
    handlers, stderr = list(root.handlers), sys.stderr
    threads, fds, dirs = set(threading.enumerate()), _open_fds(), _our_scratch_dirs()

    assert rehearsal.rehearse() == []

    assert set(threading.enumerate()) == threads
    assert _open_fds() == fds
    assert _our_scratch_dirs() <= dirs  # none added (stale ones of dead processes may go)
    assert root.handlers == handlers and sys.stderr is stderr


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_scratch_dirs_of_dead_rehearsals_are_removed_and_others_kept(tmp_path: Path) -> None:
    dead = tmp_path / f"{rehearsal.SCRATCH_PREFIX}{_dead_pid()}-abc"
    (dead / "sys" / "bus").mkdir(parents=True)
    (dead / "plugins").mkdir()
    alive = tmp_path / f"{rehearsal.SCRATCH_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    other = tmp_path / "sriovdp-rehearsal-notapid"
    other.mkdir()

    assert rehearsal.remove_stale_scratch(str(tmp_path)) == [dead.name]

    assert not dead.exists() and alive.exists() and other.exists()


def test_a_traced_rehearsal_sees_the_worker_serve_register_and_allocate() -> None:
    codes = rehearsal.rehearse(trace=True)

    names = {c.co_qualname for c in codes}
    assert {"Worker.run", "Worker.serve", "Worker.shutdown"} <= names
    assert {"DevicePluginServicer.Allocate", "DevicePluginServicer.ListAndWatch"} <= names
    assert "unary_call" in names  # the registrar's call to the kubelet
    # the scaffolding (the simulated node, the rehearsing kubelet) is no worker's code
    assert not any(c.co_filename in (rehearsal.__file__,) for c in codes)
    assert not any("simnode" in c.co_filename for c in codes)


def test_the_scout_names_code_objects_of_this_process() -> None:
    threads = set(threading.enumerate())

    ids = rehearsal.scout()

    found = codelayout.code_objects(ids)
    assert plugin_main.Worker.run.__code__ in found
    assert len(found) > 300  # the worker runs several hundred functions
    assert set(threading.enumerate()) == threads
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # the scout is reaped


def test_a_report_of_garbage_bytes_gives_no_code_and_no_error() -> None:
    ids = rehearsal.decode_ids(b"\x01\x02\x03\x04\x05\x06\x07\x08\xff\xff\xff")
    assert ids == [0x0807060504030201]  # the partial last id is dropped
    assert codelayout.code_objects([*ids, 0, 2**64 - 1]) == []


def test_a_scout_that_cannot_fork_is_a_rehearsal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    fds = _open_fds()
    monkeypatch.setattr(rehearsal.os, "fork", no_fork)

    with pytest.raises(rehearsal.RehearsalError, match="cannot start the scout"):
        rehearsal.Scout()
    assert _open_fds() == fds  # its pipe closed again


def test_a_failing_scout_is_a_rehearsal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_scratch: Path, _scout: bool) -> None:
        raise OSError("no sysfs here")

    monkeypatch.setattr(rehearsal, "_run_worker", broken)

    with pytest.raises(rehearsal.RehearsalError, match="the scout failed"):
        rehearsal.scout()


def test_the_zygote_preloads_without_the_saving_when_the_rehearsal_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_scratch: Path, _scout: bool) -> None:
        raise OSError("no sysfs here")

    monkeypatch.setattr(rehearsal, "_run_worker", broken)
    monkeypatch.setattr(zygote.gc, "freeze", lambda: None)  # keep this test process collectable
    code = plugin_main.Worker.run.__code__

    with caplog.at_level(logging.WARNING, logger=zygote.__name__):
        assert zygote.preload(modules=()) == []

    assert "worker code not laid out" in caplog.text and "no sysfs here" in caplog.text
    assert plugin_main.Worker.run.__code__ is code


def test_a_rehearsal_that_leaves_a_thread_stops_the_zygote_from_forking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    left = threading.Thread(target=release.wait, name="left-behind", daemon=True)

    def leaves_a_thread(_scratch: Path, _scout: bool) -> None:
        left.start()

    monkeypatch.setattr(rehearsal, "_run_worker", leaves_a_thread)
    monkeypatch.setattr(rehearsal, "DEADLINE_S", 0.2)
    monkeypatch.setattr(zygote.gc, "freeze", lambda: None)
    try:
        with pytest.raises(zygote.ThreadsLeftError, match="left-behind"):
            zygote.preload(modules=())
    finally:
        release.set()
        left.join()


def test_the_zygote_restarts_itself_without_the_rehearsal(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def execv(path: str, argv: list[str]) -> None:
        calls.append([path, *argv])
        raise SystemExit(0)

    monkeypatch.setattr(zygote.os, "execv", execv)
    with pytest.raises(SystemExit):
        zygote.restart_without_rehearsal(["--parent", "1", "--requests", "5", "--reports", "6"])

    fresh = [sys.executable, "-m", "sriovdp.workers", "zygote"]
    given = ["--parent", "1", "--requests", "5", "--reports", "6"]
    assert calls == [[sys.executable, *fresh, *given, "--no-rehearsal"]]


def test_the_scout_starts_like_a_forked_worker_and_runs_it_on_a_bus() -> None:
    # ids name code that exists here before the fork: the zygote has every worker module loaded
    importlib.import_module("sriovdp.workers.plugin.bus_link")

    names = {c.co_qualname for c in codelayout.code_objects(rehearsal.scout())}

    assert {"prepare_child", "run_entry", "main"} <= names  # the zygote's way into a worker
    assert "_after_fork" in names  # threading's at-fork handler: traced from the fork on
    assert {"BusLink._run", "BusLink.handle", "PoolState.apply_link", "Worker.on_kubelet"} <= names
    assert {"Worker.shutdown", "DevicePluginServicer.Allocate"} <= names  # SIGTERM stopped it


def test_the_scout_keeps_none_of_this_process_descriptors() -> None:
    """A zygote's request and report pipes must not stay open in the scout: the supervisor learns
    that the zygote died from the end of the report pipe."""
    read_end, write_end = os.pipe()
    try:
        scout = rehearsal.Scout()
        closed = False
        deadline = time.monotonic() + rehearsal.DEADLINE_S
        while not closed and time.monotonic() < deadline:
            try:
                fds = {int(fd) for fd in os.listdir(f"/proc/{scout.pid}/fd")}
            except FileNotFoundError:
                break  # the scout ended before we saw it rehearse
            closed = read_end not in fds and write_end not in fds and len(fds) > 0
            time.sleep(0.005)
        scout.ids()
    finally:
        os.close(read_end)
        os.close(write_end)
    assert closed
