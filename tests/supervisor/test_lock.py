"""Run dir: 0700, one supervisor per directory, stale sockets removed, files gone on release."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sriovdp.supervisor.lock import LockedError, RunDirError, RunDirLock


def test_creates_private_dir_and_refuses_a_second_holder(tmp_path: Path) -> None:
    run = tmp_path / "run" / "sriov-dp"
    first = RunDirLock(run)
    first.acquire()
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert first.run_dir.lock.read_text().strip() == str(os.getpid())
    # the first holder's sockets, bound after locking
    first.run_dir.control.touch()
    second = RunDirLock(run)
    with pytest.raises(LockedError, match=f"in use by another supervisor \\(pid {os.getpid()}\\)"):
        second.acquire()
    assert first.run_dir.control.exists()  # the refused one disturbed nothing
    assert first.run_dir.lock.read_text().strip() == str(os.getpid())
    first.release()
    assert not first.run_dir.lock.exists()
    assert not first.run_dir.control.exists()
    second.acquire()  # free again
    second.release()


def test_stale_sockets_of_a_killed_predecessor_are_removed(tmp_path: Path) -> None:
    lock = RunDirLock(tmp_path)
    for path in (lock.run_dir.bus_in, lock.run_dir.bus_out, lock.run_dir.control):
        path.touch()
    lock.run_dir.lock.write_text("12345\n")  # unlocked: its holder is dead
    os.chmod(tmp_path, 0o755)
    lock.acquire()
    assert not lock.run_dir.bus_in.exists()
    assert not lock.run_dir.bus_out.exists()
    assert not lock.run_dir.control.exists()
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    lock.release()


def test_not_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(RunDirError):
        RunDirLock(target).acquire()
