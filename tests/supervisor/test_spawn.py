"""Spawners over real processes: exec and zygote start a child and learn its end exactly once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sriovdp.supervisor.child import ChildSpec, describe_exit
from sriovdp.supervisor.spawn import (
    ExecSpawner,
    SpawnError,
    ZygoteSpawner,
    make_spawner,
    reap,
)
from tests.harness.zygote import subreaper_zygote

pytestmark = pytest.mark.timeout(30)

FAKE = "tests.supervisor.fakechild"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def knobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKECHILD_KNOBS", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(REPO)
    return tmp_path


def test_reap_collects_until_nothing_is_left() -> None:
    results = iter([(11, 0), (12, 256), (0, 0)])
    assert reap(lambda _pid, _flags: next(results)) == [(11, 0), (12, 256)]

    def none_left(_pid: int, _flags: int) -> tuple[int, int]:
        raise ChildProcessError

    assert reap(none_left) == []


def test_make_spawner() -> None:
    assert make_spawner("exec").mode == "exec"
    assert make_spawner("zygote").mode == "zygote"
    with pytest.raises(ValueError, match="spawn mode"):
        make_spawner("fork")


def _wait_for_end(pid: int, on_other: Callable[[int, int], object] = lambda _p, _s: None) -> int:
    """Reaps until ``pid`` ends; every other pid reaped goes to ``on_other``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for ended, status in reap():
            if ended == pid:
                return status
            on_other(ended, status)
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never ended")


def test_exec_spawner_child_is_ours_and_reaped_by_us(knobs: Path) -> None:
    (knobs / "a.exit").write_text("7")
    spawner = ExecSpawner()
    pid = spawner.spawn(ChildSpec("a", "plugin", ("plugin", "--name", "a"), entry=FAKE))
    status = _wait_for_end(pid)
    assert describe_exit(status) == "exit 7"
    assert (knobs / "a.starts").read_text().split() == [str(pid)]


@pytest.fixture
def zygote() -> Iterator[ZygoteSpawner]:
    with subreaper_zygote() as spawner:
        yield spawner


def test_zygote_workers_are_ours_to_reap(knobs: Path, zygote: ZygoteSpawner) -> None:
    """A forked worker is re-parented to the spawning process at once: its end reaches our
    waitpid(), not the zygote's."""
    (knobs / "a.exit").write_text("7")
    (knobs / "b.exit").write_text("78")
    pid_a = zygote.spawn(ChildSpec("a", "plugin", ("plugin", "--name", "a"), entry=FAKE))
    assert zygote.helper_pid() not in (None, pid_a)
    assert describe_exit(_wait_for_end(pid_a)) == "exit 7"
    pid_b = zygote.spawn(ChildSpec("b", "plugin", ("plugin", "--name", "b"), entry=FAKE))
    assert describe_exit(_wait_for_end(pid_b)) == "exit 78"
    assert (knobs / "a.starts").read_text().split() == [str(pid_a)]


def test_zygote_reports_a_bad_entry_as_exit_1_and_survives(
    knobs: Path, zygote: ZygoteSpawner
) -> None:
    pid = zygote.spawn(ChildSpec("x", "plugin", ("plugin",), entry="no.such.module"))
    assert describe_exit(_wait_for_end(pid)) == "exit 1"
    (knobs / "y.exit").write_text("3")
    pid = zygote.spawn(ChildSpec("y", "plugin", ("plugin", "--name", "y"), entry=FAKE))
    assert describe_exit(_wait_for_end(pid)) == "exit 3"


def test_a_dead_zygote_leaves_its_workers_running_and_is_replaced(
    knobs: Path, zygote: ZygoteSpawner
) -> None:
    (knobs / "a.slow-start").write_text("60")
    (knobs / "b.exit").write_text("0")
    pid_a = zygote.spawn(ChildSpec("a", "plugin", ("plugin", "--name", "a"), entry=FAKE))
    first = zygote.helper_pid()
    assert first is not None
    os.kill(first, 9)
    deadline = time.monotonic() + 10
    while zygote.helper_pid() is not None and time.monotonic() < deadline:
        for pid, status in reap():
            assert pid != pid_a, "the worker died with the zygote"
            zygote.reaped(pid, status)
        time.sleep(0.01)
    assert zygote.helper_pid() is None
    os.kill(pid_a, 0)  # still there, still ours
    assert os.getpid() == int(Path(f"/proc/{pid_a}/stat").read_text().rsplit(")", 1)[1].split()[1])
    pid_b = zygote.spawn(ChildSpec("b", "plugin", ("plugin", "--name", "b"), entry=FAKE))
    assert zygote.helper_pid() not in (None, first)
    assert describe_exit(_wait_for_end(pid_b)) == "exit 0"
    os.kill(pid_a, 9)
    assert describe_exit(_wait_for_end(pid_a)) == "signal SIGKILL"


def test_exec_children_raise_their_oom_score(knobs: Path) -> None:
    (knobs / "o.slow-start").write_text("60")
    pid = ExecSpawner().spawn(ChildSpec("o", "plugin", ("plugin", "--name", "o"), entry=FAKE))
    try:
        own = int(Path("/proc/self/oom_score_adj").read_text())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not (knobs / "o.starts").exists():
                time.sleep(0.01)
                continue
            break
        child = int(Path(f"/proc/{pid}/oom_score_adj").read_text())
        assert child == min(1000, own + 500)
    finally:
        os.kill(pid, 9)
        _wait_for_end(pid)


def test_spawn_error_for_a_missing_interpreter() -> None:
    with pytest.raises(SpawnError):
        ExecSpawner("/nonexistent/python").spawn(ChildSpec("a", "plugin", ()))
