"""The zygote (``sriovdp.launch.zygote``): what it preloads, and that it forks with nothing alive
but itself: one thread, no socket, no descriptor beyond stdio and its two pipes (grpc's fork
rules). Checked in fresh interpreters and on a running zygote between real forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sriovdp.launch.zygote import PRELOAD
from sriovdp.supervisor.child import ChildSpec
from sriovdp.supervisor.spawn import ZygoteSpawner
from tests.harness.zygote import subreaper_zygote

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import json, os, sys, threading
before = sorted(os.listdir("/proc/self/fd"))
from sriovdp.launch import zygote
missing = zygote.preload()
print(json.dumps({
    "missing": missing,
    "modules": sorted(sys.modules),
    "threads": threading.active_count(),
    "tasks": len(os.listdir("/proc/self/task")),
    "fds_before": before,
    "fds_after": sorted(os.listdir("/proc/self/fd")),
}))
"""


def _preload_in_a_fresh_interpreter() -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_every_preloaded_module_imports_and_nothing_is_left_alive() -> None:
    """preload() skips a module it cannot import, so a renamed one would silently stop being
    shared: every name must import. It imports grpc (the workers' gRPC) but starts no thread and
    opens no descriptor: no channel, server, ZeroMQ context or netlink socket exists yet."""
    result = _preload_in_a_fresh_interpreter()
    assert result["missing"] == []
    modules = result["modules"]
    assert isinstance(modules, list)
    assert "grpc._cython.cygrpc" in modules
    assert "sriovdp.proto.api_pb2_grpc" in modules
    assert not any(m == "pyroute2" or m.startswith("pyroute2.") for m in modules)
    assert not any(m.startswith("sriovdp.simnode") for m in modules)
    assert result["threads"] == 1
    assert result["tasks"] == 1
    # listdir's own descriptor shows in both listings
    assert result["fds_after"] == result["fds_before"]


@pytest.fixture
def zygote() -> Iterator[ZygoteSpawner]:
    with subreaper_zygote() as spawner:
        yield spawner


def _fd_targets(pid: int) -> dict[int, str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    return {int(fd): os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}


def test_between_forks_the_zygote_has_one_thread_and_only_its_pipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zygote: ZygoteSpawner
) -> None:
    """Each spawn forks; whatever the zygote holds at that moment every worker inherits. After
    each of several real spawns of plugin-worker stand-ins it still has a single thread and no
    descriptor beyond what it inherited and its two pipes: never a socket."""
    monkeypatch.setenv("FAKECHILD_KNOBS", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(REPO)
    pids: list[int] = []
    held: list[dict[int, str]] = []
    try:
        for name in ("a", "b", "c"):
            (tmp_path / f"{name}.slow-start").write_text("60")
            spec = ChildSpec(name, "plugin", ("plugin", "--name", name))
            spec = ChildSpec(name, "plugin", spec.argv, entry="tests.supervisor.fakechild")
            pids.append(zygote.spawn(spec))
            helper = zygote.helper_pid()
            assert helper is not None
            assert len(os.listdir(f"/proc/{helper}/task")) == 1
            targets = _fd_targets(helper)
            # a socket, an eventfd or an epoll instance would be a live object of grpc or zmq
            assert not [t for t in targets.values() if t.startswith(("socket:", "anon_inode:"))]
            held.append(targets)
        # what it inherited from this test process and its two pipes, unchanged by the forks
        assert held[0] == held[1] == held[2]
    finally:
        for pid in pids:
            os.kill(pid, 9)
        for pid in pids:
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except ChildProcessError:
                    break


def test_the_health_monitor_is_not_preloaded() -> None:
    """pyroute2 is that one process's cost, not every worker's."""
    assert "sriovdp.workers.health_monitor" not in PRELOAD
