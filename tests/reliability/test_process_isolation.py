"""Per-pool isolation includes the zygote; nothing outlives the supervisor (real supervisor, real
plugin workers, the kubelet stand-in; no root needed).

- SIGKILL of the zygote: every worker keeps running under the same pid with its ListAndWatch
  stream unbroken; the supervisor keeps supervising them (they are its children) and starts a new
  zygote when a worker later has to be restarted.
- SIGKILL of the supervisor: the zygote and every worker are gone within 2 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sriovdp.simnode import demo_config, demo_node
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.integration.test_supervisor_lifecycle import Supervisor, pid_alive, wait_until
from tests.integration.test_supervisor_plugins import Stream, all_up

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[tuple[Supervisor, KubeletStandIn]]:
    demo_node(tmp_path / "sys")
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "plugins").mkdir()
    kubelet = KubeletStandIn(tmp_path / "plugins")
    args: tuple[str, ...] = ("--proc-root", str(tmp_path / "proc"))
    args += ("--devinfo-dir", str(tmp_path / "devinfo"), "--cdi-dir", str(tmp_path / "cdi"))
    supervisor = Supervisor(
        tmp_path, mode="zygote", entry=None, args=args, config_text=json.dumps(demo_config())
    )
    try:
        assert kubelet.wait_for(all_up, 30), supervisor.log_text()
        yield supervisor, kubelet
    finally:
        if supervisor.proc.poll() is None:
            supervisor.proc.kill()
            supervisor.proc.wait()
        kubelet.stop()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def zygote_pid(s: Supervisor) -> int | None:
    pid = s.status()["supervisor"]["zygote"]["pid"]
    assert pid is None or isinstance(pid, int)
    return pid


def test_sigkill_of_the_zygote_leaves_every_pool_serving(
    sup: tuple[Supervisor, KubeletStandIn], tmp_path: Path
) -> None:
    s, kubelet = sup
    rows = s.wait_running()
    workers = {n: r["pid"] for n, r in rows.items() if r["role"] == "plugin"}
    assert len(workers) == 3
    for pid in workers.values():
        assert parent_of(pid) == s.proc.pid  # the supervisor's, not the zygote's
    streams = []
    for resource in kubelet.allocatable():
        endpoint = kubelet.endpoint(resource)
        assert endpoint is not None
        streams.append(Stream(tmp_path / "plugins" / endpoint))
    try:
        wait_until(lambda: all(st.lists >= 1 for st in streams))
        zygote = zygote_pid(s)
        assert zygote is not None
        os.kill(zygote, signal.SIGKILL)
        wait_until(lambda: zygote_pid(s) is None, what="the supervisor to reap the zygote")
        time.sleep(1.0)  # anything tied to the zygote would be gone by now
        assert not any(st.ended.is_set() for st in streams)
        rows = s.rows()
        assert {n: rows[n]["pid"] for n in workers} == workers
        assert all(rows[n]["state"] == "RUNNING" and rows[n]["restarts"] == 0 for n in workers)
        assert all(kubelet.connected(r) for r in kubelet.allocatable())

        # a worker that dies now is still seen (reaped by the supervisor) and comes back
        # through a new zygote
        victim = "intel-com_sriov_uio"
        os.kill(workers[victim], signal.SIGKILL)
        wait_until(lambda: s.rows()[victim]["pid"] not in (None, workers[victim]))
        rows = s.wait_running()
        assert rows[victim]["restarts"] == 1
        assert rows[victim]["last_exit"] == "signal SIGKILL"
        assert s.status()["supervisor"]["zygote"]["starts"] == 2
        assert parent_of(rows[victim]["pid"]) == s.proc.pid
        assert kubelet.wait_for(all_up, 30)
        others = [st for st in streams if not st.ended.is_set()]
        assert len(others) >= 2  # only the victim's own stream may have ended
    finally:
        for st in streams:
            st.close()
    assert s.stop() == 0


def test_sigkill_of_the_supervisor_ends_zygote_and_workers_within_2_s(
    sup: tuple[Supervisor, KubeletStandIn],
) -> None:
    s, _ = sup
    rows = s.wait_running()
    zygote = zygote_pid(s)
    assert zygote is not None
    pids = [zygote, *(r["pid"] for r in rows.values())]
    os.kill(s.proc.pid, signal.SIGKILL)
    s.proc.wait()
    killed_at = time.monotonic()
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="children to end")
    assert time.monotonic() - killed_at < 2.0


def test_every_process_of_the_tree_says_what_it_is(
    sup: tuple[Supervisor, KubeletStandIn],
) -> None:
    """``ps -ef`` shows a title per process, ``ps -e`` a comm per process that tells pools apart."""
    s, _ = sup
    rows = s.wait_running()
    zygote = zygote_pid(s)
    assert zygote is not None

    def title(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0 ").decode()

    def comm(pid: int) -> str:
        return Path(f"/proc/{pid}/comm").read_text().strip()

    assert title(s.proc.pid) == "sriov-dp supervisor"
    assert title(zygote) == "sriov-dp zygote"
    assert comm(zygote) == "sdp-zygote"
    assert title(rows["health-monitor"]["pid"]) == "sriov-dp health-monitor"
    assert title(rows["kubelet-watcher"]["pid"]) == "sriov-dp kubelet-watcher"
    workers = {r["pool"]: r["pid"] for r in rows.values() if r["role"] == "plugin"}
    assert {title(pid) for pid in workers.values()} == {
        f"sriov-dp worker {pool}" for pool in workers
    }
    comms = [comm(pid) for pid in workers.values()]
    assert len(set(comms)) == len(comms) == 3


def _second_supervisor(first: Supervisor, base: Path) -> subprocess.CompletedProcess[str]:
    """``run`` with its own run dir and everything else the first one's: the same kubelet."""
    argv = [sys.executable, "-m", "sriovdp", "run", "--config-file", str(first.config)]
    argv += ["--run-dir", str(base / "run2"), "--plugin-dir", str(first.base / "plugins")]
    argv += ["--sysfs-root", str(first.base / "sys"), "--proc-root", str(first.base / "proc")]
    env, cwd = first.env, first.base
    return subprocess.run(argv, check=False, capture_output=True, text=True, env=env, cwd=cwd)


def test_a_second_supervisor_on_the_same_plugin_dir_exits_and_disturbs_nothing(
    sup: tuple[Supervisor, KubeletStandIn], tmp_path: Path
) -> None:
    s, kubelet = sup
    rows = s.wait_running()
    endpoints = {r: kubelet.endpoint(r) for r in kubelet.allocatable()}
    second = _second_supervisor(s, tmp_path)
    assert second.returncode == 75, second.stderr
    assert f"plugin dir {tmp_path / 'plugins'} is served by another supervisor" in second.stderr
    assert "Traceback" not in second.stderr
    # the kubelet empties its directory when it restarts: the lock is on the directory itself
    for entry in (tmp_path / "plugins").iterdir():
        if entry.name != "kubelet.sock":
            entry.unlink()
    third = _second_supervisor(s, tmp_path)
    assert third.returncode == 75, third.stderr
    assert "Traceback" not in third.stderr
    assert {n: r["pid"] for n, r in s.rows().items()} == {n: r["pid"] for n, r in rows.items()}
    # the first supervisor's pools serve again on new sockets, as after any kubelet restart
    assert kubelet.wait_for(all_up, 30)
    assert set(endpoints) == set(kubelet.allocatable())
    assert s.stop() == 0
