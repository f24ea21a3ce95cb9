"""The restart policy with fakes for clock, spawn and kill: no processes, no sockets."""

from __future__ import annotations

import os
import signal

import pytest

from sriovdp.shared import exitcodes
from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.shared.messages import (
    Envelope,
    Message,
    PoolSummary,
    WorkerHeartbeat,
    WorkerReady,
    WorkerStateChanged,
)
from sriovdp.supervisor.arbiter import Arbiter, Timeouts
from sriovdp.supervisor.child import ChildSpec
from sriovdp.supervisor.spawn import SpawnError
from sriovdp.supervisor.states import ChildState, InvalidTransition

S = ChildState
KILLED = 9  # wait status of a SIGKILLed process
TERMED = 15


def exited(code: int) -> int:
    return code << 8


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSpawner:
    mode = "fake"

    def __init__(self) -> None:
        self.next_pid = 100
        self.spawned: list[tuple[str, int, ChildSpec]] = []
        self.fail: set[str] = set()
        #: the zygote dies with these requests in hand (a worker may have been forked)
        self.lose: set[str] = set()

    def spawn(self, spec: ChildSpec) -> int:
        if spec.name in self.fail:
            raise SpawnError("no such file")
        if spec.name in self.lose:
            raise SpawnError("zygote closed its report pipe", maybe_started=True)
        self.next_pid += 1
        self.spawned.append((spec.name, self.next_pid, spec))
        return self.next_pid

    def fileno(self) -> int | None:
        return None

    def collect(self) -> list[tuple[int, int]]:
        return []

    def reaped(self, pid: int, status: int) -> bool:
        return False

    def close(self) -> None:
        pass

    def helper_pid(self) -> int | None:
        return None

    def kill_helper(self) -> None:
        pass


class Harness:
    def __init__(self, *names: str) -> None:
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.kills: list[tuple[int, int]] = []
        self.published: list[Message] = []
        self.arbiter = Arbiter(
            spawner=self.spawner,
            publish=self.published.append,
            clock=self.clock,
            kill=lambda pid, sig: self.kills.append((pid, sig)),
            timeouts=Timeouts(heartbeat=5.0, start=20.0, stop_grace=2.0),
            backoff_policy=BackoffPolicy(base=1.0, cap=8.0, jitter=0.0, stable_after=10.0),
        )
        self.arbiter.set_specs(spec(n) for n in names)
        self.arbiter.reconcile()

    def child(self, name: str) -> object:
        return self.arbiter.children[name]

    def state(self, name: str) -> ChildState:
        return self.arbiter.children[name].state

    def pid(self, name: str) -> int:
        pid = self.arbiter.children[name].pid
        assert pid is not None
        return pid

    def send(self, message: Message) -> None:
        self.arbiter.on_message(Envelope(message.topic(), message.KIND, "w", 1, 0.0, message))

    def ready(self, name: str) -> None:
        self.send(WorkerReady(name, self.pid(name)))

    def tick(self, seconds: float = 0.0) -> None:
        self.clock.now += seconds
        self.arbiter.reconcile()


def spec(name: str, fingerprint: object = None) -> ChildSpec:
    return ChildSpec(name, "plugin", ("plugin", "--name", name), f"x.io/{name}", "m", fingerprint)


def test_start_publishes_state_and_waits_for_ready() -> None:
    h = Harness("a", "b")
    assert [n for n, _, _ in h.spawner.spawned] == ["a", "b"]
    assert h.state("a") == S.STARTING
    states = [m for m in h.published if isinstance(m, WorkerStateChanged)]
    assert states[0] == WorkerStateChanged("a", "STARTING", h.pid("a"))
    h.send(WorkerHeartbeat("a", h.pid("a")))
    h.send(PoolSummary("a", "x.io/a", h.pid("a"), True, 4, 4, "registered"))
    assert h.state("a") == S.STARTING  # heartbeats and summaries are not READY
    h.send(WorkerReady("a", h.pid("a") + 1000))  # a stranger's READY
    assert h.state("a") == S.STARTING
    h.ready("a")
    assert h.state("a") == S.RUNNING
    assert h.published[-1] == WorkerStateChanged("a", "RUNNING", h.pid("a"))


def test_config_exit_is_fatal_without_a_restart_loop() -> None:
    h = Harness("a")
    pid = h.pid("a")
    h.arbiter.on_exit(pid, exited(exitcodes.CHILD_CONFIG))
    assert h.state("a") == S.FATAL
    for _ in range(5):
        h.tick(60)
    assert len(h.spawner.spawned) == 1
    assert h.arbiter.rows()[0].last_exit == "exit 78"
    assert h.arbiter.restart("a")  # an operator may try again
    assert h.state("a") == S.STARTING
    assert len(h.spawner.spawned) == 2


def test_crash_restarts_at_once_then_backs_off() -> None:
    h = Harness("a", "b")
    h.ready("a")
    h.ready("b")
    b_pid = h.pid("b")
    h.arbiter.on_exit(h.pid("a"), KILLED)
    assert h.state("a") == S.EXITED
    h.tick()
    assert h.state("a") == S.STARTING  # first failure: no delay
    h.arbiter.on_exit(h.pid("a"), exited(1))  # dies again before READY
    h.tick()
    assert h.state("a") == S.BACKOFF
    assert h.arbiter.next_deadline() == pytest.approx(h.clock.now + 1.0)
    h.tick(0.9)
    assert h.state("a") == S.BACKOFF
    h.tick(0.1)
    assert h.state("a") == S.STARTING
    assert h.arbiter.children["a"].restarts == 2
    # the other child was never touched
    assert h.pid("b") == b_pid and h.state("b") == S.RUNNING
    assert h.kills == []


def test_stable_run_resets_the_backoff() -> None:
    h = Harness("a")
    for _ in range(3):  # three quick deaths: the next delay would be 2 s
        h.arbiter.on_exit(h.pid("a"), exited(1))
        h.tick()
        h.tick(10)
    assert h.arbiter.children["a"].backoff.failures == 3
    h.ready("a")
    h.tick(3)
    for _ in range(3):
        h.send(WorkerHeartbeat("a", h.pid("a")))
        h.tick(3)
    h.arbiter.on_exit(h.pid("a"), KILLED)
    h.tick()
    assert h.state("a") == S.STARTING


def test_silent_child_is_termed_then_killed_then_restarted() -> None:
    h = Harness("a")
    h.ready("a")
    pid = h.pid("a")
    h.tick(4.9)
    assert h.kills == []
    h.send(WorkerHeartbeat("a", pid))
    h.tick(4.9)
    assert h.kills == []
    h.tick(0.2)
    assert h.state("a") == S.STOPPING
    assert h.kills == [(pid, signal.SIGTERM)]
    h.tick(1.9)
    assert h.kills == [(pid, signal.SIGTERM)]
    h.tick(0.2)
    assert h.kills == [(pid, signal.SIGTERM), (pid, signal.SIGKILL)]
    h.arbiter.on_exit(pid, KILLED)
    assert h.state("a") == S.STOPPED
    h.tick()
    assert h.state("a") == S.STARTING
    assert h.pid("a") != pid


def test_start_timeout_without_ready() -> None:
    h = Harness("a")
    pid = h.pid("a")
    h.tick(19.9)
    assert h.state("a") == S.STARTING
    h.tick(0.2)
    assert h.state("a") == S.STOPPING
    assert h.kills == [(pid, signal.SIGTERM)]


def test_stop_all_terms_everyone_at_once() -> None:
    h = Harness("a", "b", "c")
    h.ready("a")
    h.arbiter.on_exit(h.pid("c"), exited(exitcodes.CHILD_CONFIG))
    h.arbiter.stop_all()
    h.tick()
    assert sorted(sig for _, sig in h.kills) == [signal.SIGTERM, signal.SIGTERM]
    assert h.state("c") == S.STOPPED
    assert not h.arbiter.all_stopped()
    for pid, _ in list(h.kills):
        h.arbiter.on_exit(pid, TERMED)
    h.tick()
    assert h.arbiter.all_stopped()
    assert len(h.spawner.spawned) == 3  # nothing restarted while stopping


def test_reload_unchanged_updated_restarted_removed_new() -> None:
    """A running pool whose devices may change is told in place (SIGHUP, same process); one
    whose command line changes is restarted; FATAL ones start again."""
    h = Harness()
    moved = ChildSpec("moved", "plugin", ("plugin", "--name", "moved"), "x.io/moved", "m")
    h.arbiter.set_specs([spec("keep", 1), spec("change", 1), spec("drop", 1), moved])
    h.tick()
    for name in ("keep", "change", "drop", "moved"):
        h.ready(name)
    keep, change, drop, old = h.pid("keep"), h.pid("change"), h.pid("drop"), h.pid("moved")
    moved_again = ChildSpec("moved", "plugin", ("plugin", "--name", "moved", "--x"), "x.io/moved")
    result = h.arbiter.set_specs([spec("keep", 1), spec("change", 2), spec("new", 1), moved_again])
    assert result.unchanged == ("keep",)
    assert result.updated == ("change",)
    assert result.restarted == ("moved",)
    assert result.stopped == ("drop",)
    assert result.started == ("new",)
    h.tick()
    assert sorted(h.kills) == sorted(
        [(change, signal.SIGHUP), (drop, signal.SIGTERM), (old, signal.SIGTERM)]
    )
    assert h.pid("keep") == keep and h.state("keep") == S.RUNNING
    assert h.pid("change") == change and h.state("change") == S.RUNNING
    assert h.arbiter.children["change"].spec.fingerprint == 2
    assert h.state("new") == S.STARTING
    h.arbiter.on_exit(old, TERMED)
    h.arbiter.on_exit(drop, TERMED)
    h.tick()
    assert "drop" not in h.arbiter.children
    assert h.state("moved") == S.STARTING
    assert h.spawner.spawned[-1][2] == moved_again


def test_reload_restarts_a_fatal_pool_instead_of_updating_it() -> None:
    h = Harness()
    h.arbiter.set_specs([spec("c", 1)])
    h.tick()
    h.arbiter.on_exit(h.pid("c"), exited(exitcodes.CHILD_CONFIG))
    h.tick()
    assert h.state("c") == S.FATAL
    result = h.arbiter.set_specs([spec("c", 2)])
    assert result.restarted == ("c",) and result.updated == ()
    h.tick()
    assert h.state("c") == S.STARTING


def test_spawn_failure_backs_off_and_retries() -> None:
    h = Harness()
    h.spawner.fail.add("a")
    h.arbiter.set_specs([spec("a")])
    h.tick()
    assert h.state("a") == S.BACKOFF
    h.spawner.fail.clear()
    h.tick(1.0)
    assert h.state("a") == S.STARTING


def test_invalid_transition_is_refused_by_the_choke_point() -> None:
    h = Harness("a")
    with pytest.raises(InvalidTransition):
        h.arbiter._change(h.arbiter.children["a"], S.BACKOFF, "bug")


def test_rows_show_pool_summary_of_the_current_process_only() -> None:
    h = Harness("a")
    h.ready("a")
    h.send(PoolSummary("a", "x.io/a", h.pid("a"), True, 8, 6, "registered"))
    row = h.arbiter.rows()[0]
    assert (row.registered, row.devices_healthy, row.devices_total) == (True, 6, 8)
    assert row.state == "RUNNING" and row.pool == "x.io/a"
    h.arbiter.on_exit(h.pid("a"), KILLED)
    row = h.arbiter.rows()[0]
    assert row.registered is None and row.last_exit == "signal SIGKILL"
    assert os.WIFSIGNALED(KILLED)


def test_a_stray_worker_of_a_known_pool_is_stopped() -> None:
    """A live child speaking for a pool under a pid the table does not know (its spawn was
    never reported) is TERMed; a late message from a pid that is no child of ours, or from
    another known child's pid, is not."""
    h = Harness()
    strays = {4242}
    h.arbiter.is_own_child = lambda pid: (
        pid in strays or pid in {p for _, p, _ in h.spawner.spawned}
    )
    h.arbiter.set_specs([spec("a"), spec("b")])
    h.tick()
    h.ready("a")
    h.ready("b")
    kills_before = list(h.kills)
    h.arbiter.on_heartbeat("a", 9999)  # not our child: ignored
    h.arbiter.on_heartbeat("a", h.pid("b"))  # another pool's worker (a reused pid): ignored
    assert h.kills == kills_before
    h.arbiter.on_message(
        Envelope("worker.a.ready", "worker.ready", "a", 1, 0.0, WorkerReady("a", 4242))
    )
    assert h.kills[-1] == (4242, signal.SIGTERM)
    assert h.state("a") == S.RUNNING and h.pid("a") != 4242


def test_the_worker_of_a_lost_spawn_is_adopted_by_its_pool_if_it_has_none() -> None:
    """The zygote died after forking a worker and before reporting it: when that worker speaks,
    its pool (backing off, no worker) adopts it instead of stopping it and starting another,
    which would register the pool once more. A pool that has a worker, or whose failed spawn
    cannot have left one, still stops a stray."""
    h = Harness("a", "b")
    strays = {4242, 4343, 4444}
    h.arbiter.is_own_child = lambda pid: (
        pid in strays or pid in {p for _, p, _ in h.spawner.spawned}
    )
    h.ready("a")
    h.ready("b")
    h.spawner.lose.add("a")
    h.spawner.fail.add("b")  # refused: nothing was forked
    h.arbiter.on_exit(h.pid("a"), KILLED)
    h.arbiter.on_exit(h.pid("b"), KILLED)
    h.tick()
    assert h.state("a") == S.BACKOFF and h.state("b") == S.BACKOFF
    h.send(WorkerReady("a", 4242))
    assert h.state("a") == S.RUNNING and h.pid("a") == 4242
    assert h.kills == []
    changes = [m for m in h.published if isinstance(m, WorkerStateChanged)]
    assert [(m.state, m.pid) for m in changes[-2:]] == [("STARTING", 4242), ("RUNNING", 4242)]
    h.send(WorkerHeartbeat("a", 4343))  # a second one: the pool has its worker now
    assert h.kills == [(4343, signal.SIGTERM)]
    h.send(WorkerReady("b", 4444))
    assert h.kills[-1] == (4444, signal.SIGTERM) and h.state("b") == S.BACKOFF
    # the adopted worker is the pool's own from now on: its exit restarts the pool
    h.spawner.lose.clear()
    h.arbiter.on_exit(4242, KILLED)
    assert h.state("a") == S.EXITED
    h.tick()  # backing off: its crashes count as any worker's
    h.tick(60)
    assert h.state("a") == S.STARTING and h.pid("a") not in strays
