"""Spawners over real processes: exec and zygote start a child and learn its end exactly once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sriovdp.supervisor.child import ChildSpec, describe_exit
from sriovdp.supervisor.spawn import (
    ZYGOTE_GLIBC_TUNABLES,
    ExecSpawner,
    SpawnError,
    ZygoteSpawner,
    make_spawner,
    reap,
    zygote_environ,
)

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


def _wait_for_end(collect: Callable[[], list[tuple[int, int]]], pid: int) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for ended, status in collect():
            assert ended == pid
            return status
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never reported")


def test_exec_spawner_child_is_ours_and_reaped_by_us(knobs: Path) -> None:
    (knobs / "a.exit").write_text("7")
    spawner = ExecSpawner()
    pid = spawner.spawn(ChildSpec("a", "plugin", ("plugin", "--name", "a"), entry=FAKE))
    status = _wait_for_end(reap, pid)
    assert describe_exit(status) == "exit 7"
    assert (knobs / "a.starts").read_text().split() == [str(pid)]
    assert spawner.collect() == []


@pytest.fixture
def zygote() -> Iterator[ZygoteSpawner]:
    spawner = ZygoteSpawner(reply_timeout=20)
    yield spawner
    spawner.close()
    while spawner.helper_pid() is not None:
        for pid, status in reap():
            spawner.reaped(pid, status)
        time.sleep(0.01)


def test_zygote_forks_children_and_reports_their_ends(knobs: Path, zygote: ZygoteSpawner) -> None:
    (knobs / "a.exit").write_text("7")
    (knobs / "b.exit").write_text("78")
    pid_a = zygote.spawn(ChildSpec("a", "plugin", ("plugin", "--name", "a"), entry=FAKE))
    assert zygote.helper_pid() not in (None, pid_a)
    assert describe_exit(_wait_for_end(zygote.collect, pid_a)) == "exit 7"
    pid_b = zygote.spawn(ChildSpec("b", "plugin", ("plugin", "--name", "b"), entry=FAKE))
    assert describe_exit(_wait_for_end(zygote.collect, pid_b)) == "exit 78"
    assert reap() == []  # the zygote reaped them; nothing is ours but the zygote, still alive


def test_zygote_environ_turns_the_thread_cache_off_and_keeps_the_operators_tunables() -> None:
    assert zygote_environ({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": ZYGOTE_GLIBC_TUNABLES}
    theirs = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
    assert zygote_environ(theirs)["GLIBC_TUNABLES"] == (
        f"{ZYGOTE_GLIBC_TUNABLES}:glibc.malloc.arena_max=1"
    )
    # an operator who set the cache size themselves keeps it
    own = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=3"}
    assert zygote_environ(own) == own


def test_the_running_zygote_and_its_children_have_no_malloc_thread_cache(
    knobs: Path, zygote: ZygoteSpawner
) -> None:
    """glibc reads tunables at exec only: the zygote must be started with them in its environment
    (its forks inherit the allocator's state, and the variable)."""
    (knobs / "t.slow-start").write_text("30")
    pid = zygote.spawn(ChildSpec("t", "plugin", ("plugin", "--name", "t"), entry=FAKE))
    try:
        for proc in (zygote.helper_pid(), pid):
            environ = Path(f"/proc/{proc}/environ").read_bytes().split(b"\0")
            assert f"GLIBC_TUNABLES={ZYGOTE_GLIBC_TUNABLES}".encode() in environ
    finally:
        os.kill(pid, 9)
        _wait_for_end(zygote.collect, pid)


def test_zygote_reports_a_bad_entry_as_exit_1_and_survives(
    knobs: Path, zygote: ZygoteSpawner
) -> None:
    pid = zygote.spawn(ChildSpec("x", "plugin", ("plugin",), entry="no.such.module"))
    assert describe_exit(_wait_for_end(zygote.collect, pid)) == "exit 1"
    (knobs / "y.exit").write_text("3")
    pid = zygote.spawn(ChildSpec("y", "plugin", ("plugin", "--name", "y"), entry=FAKE))
    assert describe_exit(_wait_for_end(zygote.collect, pid)) == "exit 3"


def test_a_dead_zygote_is_noticed_and_replaced(knobs: Path, zygote: ZygoteSpawner) -> None:
    (knobs / "a.exit").write_text("0")
    zygote.start()
    first = zygote.helper_pid()
    assert first is not None
    os.kill(first, 9)
    deadline = time.monotonic() + 10
    while zygote.helper_pid() is not None and time.monotonic() < deadline:
        for pid, status in reap():
            zygote.reaped(pid, status)
        time.sleep(0.01)
    assert zygote.helper_pid() is None
    pid = zygote.spawn(ChildSpec("a", "plugin", ("plugin", "--name", "a"), entry=FAKE))
    assert zygote.helper_pid() not in (None, first)
    assert describe_exit(_wait_for_end(zygote.collect, pid)) == "exit 0"


def test_spawn_error_for_a_missing_interpreter() -> None:
    with pytest.raises(SpawnError):
        ExecSpawner("/nonexistent/python").spawn(ChildSpec("a", "plugin", ()))
