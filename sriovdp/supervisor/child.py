"""One child's record in the supervisor's table and the single ``change_state`` choke point
(supervisor process).

:class:`ChildSpec` is what the supervisor wants to run (immutable; reload compares them);
:class:`Child` is what it knows about the process running it (mutable, owned by the arbiter's
loop). Every state change goes through :func:`change_state`: it checks the transition, stamps
the time, logs one line and publishes :class:`WorkerStateChanged` on the bus.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from sriovdp.shared.backoff import Backoff
from sriovdp.shared.messages import Message, PoolSummary, WorkerStateChanged
from sriovdp.supervisor.runopts import WORKERS_ENTRY
from sriovdp.supervisor.states import ChildState, check_transition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run one child. Two specs that compare equal mean "nothing to restart".

    ``entry`` names a module with ``main(argv) -> int``; tests substitute a fake child module.
    ``fingerprint`` carries what the child's behaviour depends on beyond its argv (for a plugin
    worker, its :class:`~sriovdp.shared.model.PoolConfig`), so reload restarts it when it changes.
    """

    name: str
    role: str
    argv: tuple[str, ...]
    resource: str = ""  # "<prefix>/<name>" for plugin workers, "" for the others
    entry: str = WORKERS_ENTRY
    fingerprint: object = None


def describe_exit(status: int) -> str:
    """A wait status as people read it: ``exit 1``, ``signal SIGKILL``."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    if os.WIFEXITED(status):
        return f"exit {os.WEXITSTATUS(status)}"
    return f"status {status}"


@dataclass(slots=True)
class Child:
    """The supervisor's knowledge of one child. Only the arbiter's loop touches it."""

    spec: ChildSpec
    backoff: Backoff
    state: ChildState = ChildState.STOPPED
    state_since: float = 0.0
    wanted: bool = True  # reconcile() keeps it running while True
    pid: int | None = None
    started_at: float | None = None  # monotonic time of the current process's spawn
    ready_at: float | None = None
    last_heartbeat: float | None = None
    restarts: int = 0  # starts after the first one
    starts: int = 0
    last_exit: str = ""  # "exit 1", "signal SIGKILL"
    last_exit_code: int | None = None  # the same as a return code: status, or -signal
    last_event: str = ""  # the reason of the last state change
    next_start_at: float = 0.0  # BACKOFF: when to start again
    term_sent_at: float | None = None  # STOPPING: when SIGTERM went out
    kill_sent: bool = False
    restart_after_stop: bool = False  # STOPPING for a restart: start again right after
    summary: PoolSummary | None = None  # the pool's last PoolSummary from this process
    pending_spec: ChildSpec | None = None  # reload changed the spec: swap it in once stopped
    removed: bool = False  # reload removed it: drop the record once stopped
    #: the spec of the last spawn whose outcome was lost with the zygote (a worker may run)
    lost_spawn: ChildSpec | None = None

    @property
    def name(self) -> str:
        return self.spec.name


def change_state(
    child: Child,
    new: ChildState,
    reason: str,
    now: float,
    publish: Callable[[Message], None],
) -> None:
    """The only way a child changes state: check, stamp, log one line, publish."""
    old = child.state
    check_transition(old, new)
    child.state = new
    child.state_since = now
    child.last_event = reason
    log.info(
        "%s: %s -> %s (%s)",
        child.name,
        old.name,
        new.name,
        reason,
        extra={"child": child.name, "from": old.name, "to": new.name, "child_pid": child.pid},
    )
    publish(WorkerStateChanged(name=child.name, state=new.name, pid=child.pid or 0))
