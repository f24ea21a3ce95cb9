"""The supervisor as a real process tree, with fake children speaking the real bus.

Children are ``tests.supervisor.fakechild``: with a fake child the test starts the supervisor's
own entry, ``python -m sriovdp.supervisor --options JSON`` (what ``run`` execs), with the options
``run`` would build from the same arguments and the fake as the children's module. These tests
prove the supervisor's own behaviour: restarts, FATAL, heartbeats, shutdown, the lock, reload,
status exit codes, and garbage on its sockets. Both spawn modes run the core cases.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from sriovdp.shared.bus import RunDir
from sriovdp.supervisor.cli_run import run_command, run_options
from sriovdp.supervisor.client import ControlClient
from sriovdp.supervisor.runopts import options_to_json

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.supervisor.fakechild"
INFRA = {"health-monitor", "kubelet-watcher", "metrics"}


def pool_config(*names: str, drivers: dict[str, str] | None = None) -> str:
    drivers = drivers or {}
    return json.dumps(
        {
            "resourceList": [
                {"resourceName": n, "selectors": {"drivers": [drivers.get(n, "iavf")]}}
                for n in names
            ]
        }
    )


def child(pool: str) -> str:
    return f"intel-com_{pool}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def options(run: list[str], entry: str) -> str:
    """The supervisor's options for ``run`` with these arguments, its children running
    ``entry``: parsed by the real ``run`` command, as the CLI would before its exec."""
    ctx = run_command.make_context("run", list(run))
    return options_to_json(dataclasses.replace(run_options(**ctx.params), child_entry=entry))


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


class Supervisor:
    """One ``sriov-supervisor run`` subprocess over a private tmp dir."""

    def __init__(
        self,
        base: Path,
        *,
        pools: tuple[str, ...] = ("a", "b"),
        mode: str = "zygote",
        args: tuple[str, ...] = (),
        entry: str | None = FAKE,
        config_text: str | None = None,
        watch_config: bool = False,
    ) -> None:
        """``watch_config`` off by default: a test that edits the config and reloads by hand
        would otherwise race the supervisor's own reload of the edited file."""
        self.base = base
        self.run_dir = base / "run"
        self.knobs = base / "knobs"
        self.knobs.mkdir(exist_ok=True)
        self.config = base / "config.json"
        self.config.write_text(config_text or pool_config(*pools))
        self.log = base / f"supervisor-{time.monotonic_ns()}.log"
        self.env = dict(os.environ, FAKECHILD_KNOBS=str(self.knobs), PYTHONPATH=str(REPO))
        (base / "sys").mkdir(exist_ok=True)
        run = ["--config-file", str(self.config), "--run-dir", str(self.run_dir)]
        run += ["--plugin-dir", str(base / "plugins"), "--sysfs-root", str(base / "sys")]
        run += ["--spawn-mode", mode, "--watch-config" if watch_config else "--no-watch-config"]
        run += args
        argv = [sys.executable, "-m", "sriovdp", "run", *run]
        if entry:
            argv = [sys.executable, "-m", "sriovdp.supervisor", "--options", options(run, entry)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env, cwd=REPO)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sriovdp", *args]
        return subprocess.run(
            argv, check=False, capture_output=True, text=True, env=self.env, timeout=20
        )

    def status(self) -> dict[str, Any]:
        with ControlClient(self.run_dir, timeout=10.0) as client:
            result: dict[str, Any] = client.request("status")
            return result

    def rows(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.status()["children"]}

    def reachable(self) -> bool:
        try:
            self.status()
        except Exception:
            return False
        return True

    def wait_running(self, *names: str) -> dict[str, dict[str, Any]]:
        def ok() -> bool:
            if not self.reachable():
                return False
            rows = self.rows()
            wanted = names or tuple(rows)
            return all(n in rows and rows[n]["state"] == "RUNNING" for n in wanted)

        wait_until(ok, what=f"RUNNING {names or 'all'}; log:\n{self.log_text()}")
        return self.rows()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def knob(self, name: str, knob: str, value: str = "") -> None:
        (self.knobs / f"{name}.{knob}").write_text(value)

    def starts(self, name: str) -> list[int]:
        path = self.knobs / f"{name}.starts"
        return [int(x) for x in path.read_text().split()] if path.exists() else []

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(15)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []

    def factory(**kwargs: Any) -> Supervisor:
        sup = Supervisor(tmp_path, **kwargs)
        started.append(sup)
        return sup

    yield factory
    for sup in started:
        if sup.proc.poll() is None:
            sup.proc.kill()
            sup.proc.wait()


@pytest.mark.parametrize("mode", ["zygote", "exec"])
def test_crash_of_one_child_is_restarted_others_untouched_then_clean_stop(
    make: Callable[..., Supervisor], mode: str
) -> None:
    sup = make(pools=("a", "b", "c"), mode=mode)
    rows = sup.wait_running()
    assert set(rows) == INFRA | {child(p) for p in "abc"}
    status = sup.status()
    assert status["supervisor"]["spawn_mode"] == mode
    assert rows[child("a")]["pool"] == "intel.com/a"
    assert rows[child("a")]["registered"] is True  # from the fake's PoolSummary
    before = {name: row["pid"] for name, row in rows.items()}

    os.kill(before[child("b")], signal.SIGKILL)
    wait_until(lambda: sup.rows()[child("b")]["restarts"] == 1)
    rows = sup.wait_running()
    assert rows[child("b")]["pid"] != before[child("b")]
    assert rows[child("b")]["last_exit"] == "signal SIGKILL"
    for name, pid in before.items():
        if name != child("b"):
            assert rows[name]["pid"] == pid and rows[name]["restarts"] == 0

    assert sup.cli("status", "--run-dir", str(sup.run_dir)).returncode == 0
    pids = [row["pid"] for row in rows.values()]
    assert sup.stop(signal.SIGTERM) == 0
    assert not any(pid_alive(pid) for pid in pids)
    for name, row in rows.items():  # every child got its TERM and stopped cleanly
        assert str(row["pid"]) in (sup.knobs / f"{name}.stops").read_text().split()
    assert sorted(p.name for p in sup.run_dir.iterdir()) == []  # sockets and lock removed


@pytest.mark.parametrize("mode", ["zygote", "exec"])
def test_sigkill_of_the_supervisor_takes_every_child_down(
    make: Callable[..., Supervisor], mode: str
) -> None:
    sup = make(pools=("a", "b"), mode=mode)
    pids = [row["pid"] for row in sup.wait_running().values()]
    sup.stop(signal.SIGKILL)
    # PR_SET_PDEATHSIG: each child is signalled the moment its parent goes (no polling)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=30, what="children to die")


def test_config_exit_is_fatal_and_status_says_not_running(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    (tmp_path / "knobs").mkdir()
    (tmp_path / "knobs" / f"{child('a')}.exit").write_text("78")
    sup = make(pools=("a", "b"))
    wait_until(lambda: sup.reachable() and sup.rows()[child("a")]["state"] == "FATAL")
    sup.wait_running(child("b"))
    rows = sup.rows()
    assert rows[child("a")]["last_exit"] == "exit 78"
    assert rows[child("a")]["pid"] is None
    assert len(sup.starts(child("a"))) == 1  # no restart loop
    out = sup.cli("status", "--run-dir", str(sup.run_dir), "--json")
    assert out.returncode == 3
    by_name = {row["name"]: row for row in json.loads(out.stdout)["children"]}
    assert by_name[child("a")]["state"] == "FATAL"
    # fixed and restarted by hand
    (sup.knobs / f"{child('a')}.exit").unlink()
    assert sup.cli("restart", "--run-dir", str(sup.run_dir), child("a")).returncode == 0
    sup.wait_running()
    assert len(sup.starts(child("a"))) == 2
    assert sup.cli("restart", "--run-dir", str(sup.run_dir), "nope").returncode == 1


def test_silent_child_is_restarted_and_ready_gates_running(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    (tmp_path / "knobs").mkdir()
    (tmp_path / "knobs" / f"{child('a')}.no-heartbeat").write_text("")
    (tmp_path / "knobs" / f"{child('b')}.no-ready").write_text("")
    sup = make(pools=("a", "b"), args=("--heartbeat-timeout", "0.6", "--start-timeout", "30"))
    wait_until(lambda: sup.reachable() and sup.rows()[child("a")]["restarts"] >= 1)
    assert "no heartbeat" in sup.log_text()
    rows = sup.rows()
    assert rows[child("b")]["state"] == "STARTING"  # heartbeats alone never make it RUNNING
    assert rows[child("b")]["restarts"] == 0


def test_child_ignoring_term_is_killed_and_the_supervisor_still_exits_0(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    (tmp_path / "knobs").mkdir()
    (tmp_path / "knobs" / f"{child('a')}.ignore-term").write_text("")
    sup = make(pools=("a", "b"), args=("--stop-grace", "0.3"))
    pids = [row["pid"] for row in sup.wait_running().values()]
    assert sup.stop(signal.SIGTERM) == 0
    assert not any(pid_alive(p) for p in pids)
    assert "ignored SIGTERM, sending SIGKILL" in sup.log_text()


def test_second_supervisor_is_refused_and_disturbs_nothing(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    first = make(pools=("a",))
    rows = first.wait_running()
    second = make(pools=("a",))
    assert second.proc.wait(15) == 75
    assert "in use by another supervisor" in second.log_text()
    assert first.status()["supervisor"]["pid"] == first.proc.pid
    assert {n: r["pid"] for n, r in first.rows().items()} == {n: r["pid"] for n, r in rows.items()}
    assert first.stop() == 0


def test_reload_unchanged_changed_removed_new_and_invalid(
    make: Callable[..., Supervisor],
) -> None:
    sup = make(pools=("keep", "change", "drop"))
    before = {n: r["pid"] for n, r in sup.wait_running().items()}
    sup.config.write_text(pool_config("keep", "change", "new", drivers={"change": "vfio-pci"}))
    out = sup.cli("reload", "--run-dir", str(sup.run_dir))
    assert out.returncode == 0, out.stderr
    assert "updated in place: intel-com_change" in out.stdout
    assert "started: intel-com_new" in out.stdout and "stopped: intel-com_drop" in out.stdout
    wait_until(lambda: child("drop") not in sup.rows())
    rows = sup.wait_running()
    assert set(rows) - INFRA == set(map(child, ("keep", "change", "new")))
    assert rows[child("keep")]["pid"] == before[child("keep")]
    assert rows["health-monitor"]["pid"] == before["health-monitor"]
    # the changed pool took the new config in place: same process, told by SIGHUP
    assert rows[child("change")]["pid"] == before[child("change")]
    wait_until((sup.knobs / f"{child('change')}.reloads").exists, 20, "the SIGHUP")
    assert not (sup.knobs / f"{child('keep')}.reloads").exists()
    assert not pid_alive(before[child("drop")])
    assert sup.status()["supervisor"]["generation"] == 2

    # an invalid config changes nothing and is shown in status
    sup.config.write_text('{"resourceList": [{"resourceName": "bad name!"}]}')
    out = sup.cli("reload", "--run-dir", str(sup.run_dir))
    assert out.returncode == 2
    assert "bad name!" in out.stderr
    status = sup.status()
    assert status["supervisor"]["generation"] == 2
    assert status["supervisor"]["last_reload_error"]
    assert {n: r["pid"] for n, r in sup.rows().items()} == {n: r["pid"] for n, r in rows.items()}
    table = sup.cli("status", "--run-dir", str(sup.run_dir))
    assert "last reload FAILED" in table.stdout

    # SIGHUP reloads too: the running config again clears the error, and as no pool changes,
    # the generation stays
    sup.config.write_text(pool_config("keep", "change", "new", drivers={"change": "vfio-pci"}))
    sup.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: sup.status()["supervisor"]["last_reload_error"] is None)
    assert sup.status()["supervisor"]["generation"] == 2
    assert sup.rows()[child("keep")]["pid"] == before[child("keep")]


def test_status_unreachable_and_invalid_config_at_start(
    make: Callable[..., Supervisor], tmp_path: Path
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sriovdp", "status", "--run-dir", str(tmp_path / "nothing")],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 4
    bad = make(config_text='{"resourceList": [{"resourceName": "x"}]}')
    assert bad.proc.wait(15) == 2
    assert "invalid config" in bad.log_text()
    assert not bad.run_dir.exists()  # nothing started


def test_garbage_on_every_socket_never_hurts(make: Callable[..., Supervisor]) -> None:
    sup = make(pools=("a",))
    before = {n: r["pid"] for n, r in sup.wait_running().items()}
    rd = RunDir(sup.run_dir)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        junk = [[b"\xc1"], [b"x", b"y", b"z"], [msgpack.packb({"id": 1})], [b"", b""]]
        for kind, path in ((zmq.DEALER, rd.control), (zmq.PUSH, rd.bus_in)):
            sock = ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 500)
            sock.connect(RunDir.endpoint(path))
            for frames in junk:
                sock.send_multipart(frames)
            sock.close()
        sub = ctx.socket(zmq.XSUB)
        sub.setsockopt(zmq.LINGER, 500)
        sub.connect(RunDir.endpoint(rd.bus_out))
        sub.send(b"\x07garbage")
        sub.send(b"")
        sub.close()
    finally:
        ctx.term()
    wait_until(lambda: sup.status()["supervisor"]["bus"]["dropped"] >= 3)
    status = sup.status()
    assert status["supervisor"]["control"]["dropped"] >= 2
    assert {n: r["pid"] for n, r in sup.rows().items()} == before
    assert sup.stop() == 0
