"""The child table and its restart policy, free of sockets and signals (supervisor process).

:class:`Arbiter` owns every :class:`~sriovdp.supervisor.child.Child`. The supervisor's loop
(``main.py``) feeds it facts — bus messages (:meth:`on_message`), ended processes
(:meth:`on_exit`), operator requests (:meth:`restart`, :meth:`set_specs`, :meth:`stop_all`) — and
calls :meth:`reconcile` after every fact other than a heartbeat and at :meth:`next_deadline`;
it compares what is wanted with what runs and acts: spawn, back off, TERM a silent or unwanted
child, KILL one that outlived its grace period. A heartbeat only stamps its child's time, which
can move a deadline later but never earlier, so it needs no pass. Clock, spawner, kill and publish
are injected, so the whole policy is tested with fakes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sriovdp.shared import exitcodes
from sriovdp.shared.backoff import Backoff, BackoffPolicy
from sriovdp.shared.messages import (
    Envelope,
    Message,
    PoolSummary,
    WorkerHeartbeat,
    WorkerReady,
)
from sriovdp.supervisor.child import Child, ChildSpec, change_state, describe_exit
from sriovdp.supervisor.runopts import Timeouts
from sriovdp.supervisor.spawn import Spawner, SpawnError
from sriovdp.supervisor.states import AT_REST, HAS_PROCESS, ChildState
from sriovdp.supervisor.status import ChildRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    started: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    #: running plugin workers told to take the new config in place (SIGHUP): same process,
    #: same socket and registration; each compares its devices and changes only what differs
    updated: tuple[str, ...] = ()


def _return_code(status: int) -> int | None:
    """A wait status as a return code (exit status, or minus the signal); None if neither."""
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return None


def _is_own_child(pid: int) -> bool:
    """Whether ``pid`` is a live child of this process (from ``/proc/<pid>/stat``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return len(fields) > 1 and fields[0] != "Z" and fields[1] == str(os.getpid())


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone: the reaper reports its end
        os.kill(pid, sig)


@dataclass(slots=True)
class Arbiter:
    spawner: Spawner
    publish: Callable[[Message], None]
    clock: Callable[[], float] = time.monotonic
    kill: Callable[[int, int], None] = _kill
    is_own_child: Callable[[int], bool] = _is_own_child
    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff_policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    children: dict[str, Child] = field(default_factory=dict)
    stopping: bool = False

    # -- the table -------------------------------------------------------------------------

    def _new_child(self, spec: ChildSpec) -> Child:
        child = Child(spec=spec, backoff=Backoff(self.backoff_policy, clock=self.clock))
        child.state_since = self.clock()
        return child

    def set_specs(self, specs: Iterable[ChildSpec]) -> ReloadResult:
        """Makes ``specs`` the wanted set: unchanged untouched, a plugin worker whose devices may
        change updated in place, other changes restarted, the rest stopped or started. The
        first call (empty table) starts everything."""
        wanted = {spec.name: spec for spec in specs}
        started, restarted, stopped, unchanged, updated = [], [], [], [], []
        for name, child in self.children.items():
            if name not in wanted:
                if not child.removed:
                    child.wanted, child.removed = False, True
                    stopped.append(name)
                continue
            spec = wanted[name]
            if child.removed:  # removed by an earlier reload, back again before it ended
                child.removed, child.wanted = False, True
                child.pending_spec = spec if spec != child.spec else None
                started.append(name)
            elif spec == child.spec and child.pending_spec is None:
                unchanged.append(name)
            elif self._update_in_place(child, spec):
                updated.append(name)
            else:
                child.pending_spec = spec
                restarted.append(name)
                self._restart(child, "config changed")
        for name, spec in wanted.items():
            if name not in self.children:
                self.children[name] = self._new_child(spec)
                started.append(name)
        return ReloadResult(
            tuple(started), tuple(restarted), tuple(stopped), tuple(unchanged), tuple(updated)
        )

    def _update_in_place(self, child: Child, spec: ChildSpec) -> bool:
        """A plugin worker whose command line stays the same (same pool name, hence socket and
        resource) reads the new config snapshot on SIGHUP; one with no process starts with it
        anyway. A FATAL one (its config was refused) is restarted instead."""
        same_process = spec.argv == child.spec.argv and spec.entry == child.spec.entry
        if child.spec.role != "plugin" or not same_process or child.pending_spec is not None:
            return False
        if child.state == ChildState.FATAL:
            return False
        child.spec = spec
        if child.pid is not None and child.state in (ChildState.STARTING, ChildState.RUNNING):
            self.kill(child.pid, signal.SIGHUP)
        return True

    def restart(self, name: str) -> bool:
        """Operator restart: TERM and start again at once (also out of FATAL). False: unknown."""
        child = self.children.get(name)
        if child is None or child.removed:
            return False
        self._restart(child, "restart requested")
        return True

    def _restart(self, child: Child, reason: str) -> None:
        child.backoff.reset()
        if child.state in HAS_PROCESS:
            if child.state != ChildState.STOPPING:
                self._stop(child, reason)
            child.restart_after_stop = True
            return
        self._swap_pending(child)
        if child.wanted and not self.stopping:
            self._start(child, reason)

    def stop_all(self) -> None:
        """Shutdown: nothing is wanted any more; reconcile() TERMs every child at once."""
        self.stopping = True
        for child in self.children.values():
            child.wanted = False
            child.restart_after_stop = False

    def all_stopped(self) -> bool:
        return all(c.pid is None and c.state in AT_REST for c in self.children.values())

    def by_pid(self, pid: int) -> Child | None:
        return next((c for c in self.children.values() if c.pid == pid), None)

    # -- facts from the outside ------------------------------------------------------------

    def on_heartbeat(self, name: str, pid: int) -> None:
        """A heartbeat (also what :meth:`on_message` does with one): stamps the child's time."""
        child = self.children.get(name)
        if child is not None and child.pid is not None and child.pid == pid:
            child.last_heartbeat = self.clock()
        elif self._stray(name, pid):
            self.children[name].last_heartbeat = self.clock()

    def _stray(self, name: str, pid: int) -> bool:
        """A live child of ours speaks for ``name`` under a pid the table does not know: a worker
        whose spawn the supervisor never learnt of (the zygote died between the fork and its
        report). Returns True when it is adopted as ``name``'s worker: the pool has none and that
        lost spawn was of its current spec, so it is the worker the supervisor asked for (and
        may be registered already: replacing it would cost the pool another registration).
        Otherwise it is stopped: two workers of one pool take the kubelet's connection from each
        other."""
        child = self.children.get(name)
        if child is None or self.by_pid(pid) is not None or not self.is_own_child(pid):
            return False  # a late message of a process that is gone, or a stranger's
        if (
            child.pid is None
            and child.wanted
            and child.state == ChildState.BACKOFF
            and child.lost_spawn is child.spec
        ):
            child.lost_spawn = None
            self._started(child, pid, f"adopted pid {pid}, whose spawn report was lost")
            return True
        log.warning("%s: pid %d is not the one started for it: a stray, stopping it", name, pid)
        self.kill(pid, signal.SIGTERM)
        return False

    def on_message(self, env: Envelope) -> None:
        msg = env.message
        if isinstance(msg, WorkerHeartbeat):
            self.on_heartbeat(msg.name, msg.pid)
        elif isinstance(msg, (WorkerReady, PoolSummary)):
            child = self.children.get(msg.name)
            if (child is None or child.pid != msg.pid) and not self._stray(msg.name, msg.pid):
                return
            assert child is not None
            now = self.clock()
            child.last_heartbeat = now
            if isinstance(msg, PoolSummary):
                child.summary = msg
            elif isinstance(msg, WorkerReady) and child.state == ChildState.STARTING:
                child.ready_at = now
                child.backoff.ready()
                self._change(child, ChildState.RUNNING, "READY")

    def on_exit(self, pid: int, status: int) -> bool:
        """A child process ended (reaped or reported); False when it was not one of ours."""
        child = self.by_pid(pid)
        if child is None:
            return False
        how = describe_exit(status)
        child.pid = None
        child.last_exit = how
        child.last_exit_code = _return_code(status)
        child.summary = None
        child.term_sent_at = None
        child.kill_sent = False
        if child.state == ChildState.STOPPING:
            self._change(child, ChildState.STOPPED, f"stopped ({how})")
            if child.removed and not child.wanted:
                del self.children[child.name]
            return True
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == exitcodes.CHILD_CONFIG:
            child.backoff.reset()
            self._change(child, ChildState.FATAL, f"invalid config ({how}), not restarting")
            return True
        child.backoff.ended()
        self._change(child, ChildState.EXITED, f"exited unexpectedly ({how})")
        return True

    # -- the pass over the table -------------------------------------------------------------

    def reconcile(self) -> None:
        now = self.clock()
        for child in list(self.children.values()):
            if not child.wanted:
                self._reconcile_unwanted(child)
            else:
                self._reconcile_wanted(child, now)
            if child.state == ChildState.STOPPING:
                self._escalate(child, now)

    def _reconcile_unwanted(self, child: Child) -> None:
        if child.state in (ChildState.STARTING, ChildState.RUNNING):
            self._stop(child, "shutting down" if self.stopping else "removed from config")
        elif child.state in (ChildState.BACKOFF, ChildState.EXITED, ChildState.FATAL):
            self._change(child, ChildState.STOPPED, "not wanted")
        if child.state == ChildState.STOPPED and child.removed:
            del self.children[child.name]

    def _reconcile_wanted(self, child: Child, now: float) -> None:
        state = child.state
        if state in (ChildState.STOPPED, ChildState.EXITED):
            self._swap_pending(child)
            delay = 0.0 if child.restart_after_stop else child.backoff.delay()
            child.restart_after_stop = False
            if delay <= 0:
                self._start(child, "restarting" if child.starts else "starting")
            else:
                child.next_start_at = now + delay
                self._change(child, ChildState.BACKOFF, f"next start in {delay:.2f}s")
        elif state == ChildState.BACKOFF and now >= child.next_start_at:
            self._start(child, "backoff over")
        elif state == ChildState.STARTING and child.started_at is not None:
            if now - child.started_at >= self.timeouts.start:
                child.backoff.ended()
                self._stop(child, f"no READY within {self.timeouts.start:g}s")
        elif state == ChildState.RUNNING:
            last = child.last_heartbeat or child.ready_at or now
            if now - last >= self.timeouts.heartbeat:
                child.backoff.ended()
                self._stop(child, f"no heartbeat for {now - last:.1f}s")

    def _escalate(self, child: Child, now: float) -> None:
        if child.pid is None or child.kill_sent or child.term_sent_at is None:
            return
        if now - child.term_sent_at >= self.timeouts.stop_grace:
            log.warning("%s: pid %d ignored SIGTERM, sending SIGKILL", child.name, child.pid)
            child.kill_sent = True
            child.last_event = f"SIGKILL after {self.timeouts.stop_grace:g}s grace"
            self.kill(child.pid, signal.SIGKILL)

    def next_deadline(self) -> float:
        """When reconcile() has something to do at the latest (the loop sleeps until then)."""
        now = self.clock()
        due = now + self.timeouts.tick
        for child in self.children.values():
            if child.state == ChildState.BACKOFF:
                due = min(due, child.next_start_at)
            elif child.state == ChildState.STARTING and child.started_at is not None:
                due = min(due, child.started_at + self.timeouts.start)
            elif child.state == ChildState.RUNNING:
                last = child.last_heartbeat or child.ready_at or now
                due = min(due, last + self.timeouts.heartbeat)
            elif child.state == ChildState.STOPPING and child.term_sent_at is not None:
                if not child.kill_sent:
                    due = min(due, child.term_sent_at + self.timeouts.stop_grace)
            elif child.state in (ChildState.STOPPED, ChildState.EXITED) and child.wanted:
                due = now
        return due

    # -- actions -----------------------------------------------------------------------------

    def _change(self, child: Child, new: ChildState, reason: str) -> None:
        change_state(child, new, reason, self.clock(), self.publish)

    def _swap_pending(self, child: Child) -> None:
        if child.pending_spec is not None:
            child.spec, child.pending_spec = child.pending_spec, None

    def _start(self, child: Child, reason: str) -> None:
        now = self.clock()
        try:
            pid = self.spawner.spawn(child.spec)
        except SpawnError as exc:
            child.lost_spawn = child.spec if exc.maybe_started else None
            child.backoff.ended()
            delay = max(child.backoff.delay(), self.backoff_policy.base)
            child.next_start_at = now + delay
            log.error("%s: cannot start: %s", child.name, exc)
            if child.state == ChildState.BACKOFF:
                child.last_event = f"start failed: {exc}"
            else:
                self._change(child, ChildState.BACKOFF, f"start failed: {exc}")
            return
        child.lost_spawn = None
        self._started(child, pid, f"{reason}: spawned pid {pid}")

    def _started(self, child: Child, pid: int, reason: str) -> None:
        child.pid = pid
        child.started_at = self.clock()
        child.ready_at = None
        child.last_heartbeat = None
        child.summary = None
        if child.starts:
            child.restarts += 1
        child.starts += 1
        self._change(child, ChildState.STARTING, reason)

    def _stop(self, child: Child, reason: str, restart: bool = False) -> None:
        """SIGTERM. ``restart``: start again right after the exit, skipping the backoff delay
        (an operator's restart); a child stopped for failing restarts after its backoff delay."""
        assert child.pid is not None
        child.term_sent_at = self.clock()
        child.kill_sent = False
        child.restart_after_stop = restart
        self.kill(child.pid, signal.SIGTERM)
        self._change(child, ChildState.STOPPING, reason)

    # -- status --------------------------------------------------------------------------------

    def rows(self) -> list[ChildRow]:
        now = self.clock()
        out = []
        for child in self.children.values():
            summary = child.summary
            out.append(
                ChildRow(
                    name=child.name,
                    role=child.spec.role,
                    pool=child.spec.resource or None,
                    state=child.state.name,
                    pid=child.pid,
                    uptime=now - child.started_at
                    if child.pid is not None and child.started_at is not None
                    else None,
                    restarts=child.restarts,
                    last_exit=child.last_exit or None,
                    registered=summary.registered if summary else None,
                    devices_healthy=summary.devices_healthy if summary else None,
                    devices_total=summary.devices_total if summary else None,
                    last_event=(summary.last_event if summary and summary.last_event else "")
                    or child.last_event,
                    heartbeat_age=now - (child.last_heartbeat or child.ready_at or now)
                    if child.pid is not None and child.state == ChildState.RUNNING
                    else None,
                )
            )
        return out
