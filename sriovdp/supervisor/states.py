"""Child states and the allowed transitions between them (supervisor process; stdlib only).

The names are supervisord's. Every transition the arbiter makes goes through
:func:`sriovdp.supervisor.child.change_state`, which refuses anything not in :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum


class ChildState(enum.IntEnum):
    STOPPED = 0  # not running and not wanted to run right now (initial state)
    STARTING = 10  # spawned, waiting for the child's READY
    RUNNING = 20  # said READY and keeps sending heartbeats
    BACKOFF = 30  # waiting for its backoff delay before the next start
    STOPPING = 40  # sent SIGTERM (SIGKILL after the grace period), waiting for the exit
    EXITED = 100  # exited when nobody asked it to; reconcile() decides what comes next
    FATAL = 200  # exited because its config is invalid: not restarted until asked


#: state -> states it may move to; the comment on each line says what moves it
TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    # STOPPED -> STARTING: spawned; STOPPED -> BACKOFF: wanted again but must wait
    ChildState.STOPPED: frozenset({ChildState.STARTING, ChildState.BACKOFF}),
    # STARTING -> RUNNING: READY; -> EXITED: died first; -> FATAL: config exit; -> STOPPING: stop
    ChildState.STARTING: frozenset(
        {ChildState.RUNNING, ChildState.EXITED, ChildState.FATAL, ChildState.STOPPING}
    ),
    # RUNNING -> EXITED: crashed; -> FATAL: config exit; -> STOPPING: stop, restart, no heartbeat
    ChildState.RUNNING: frozenset({ChildState.EXITED, ChildState.FATAL, ChildState.STOPPING}),
    # BACKOFF -> STARTING: delay over (spawned); -> STOPPED: no longer wanted
    ChildState.BACKOFF: frozenset({ChildState.STARTING, ChildState.STOPPED}),
    # STOPPING -> STOPPED: exited (reaped or reported)
    ChildState.STOPPING: frozenset({ChildState.STOPPED}),
    # EXITED -> STARTING: restarted at once; -> BACKOFF: restart later; -> STOPPED: not wanted
    ChildState.EXITED: frozenset({ChildState.STARTING, ChildState.BACKOFF, ChildState.STOPPED}),
    # FATAL -> STARTING: restart/reload asked for it; -> BACKOFF: that spawn failed; -> STOPPED
    ChildState.FATAL: frozenset({ChildState.STARTING, ChildState.BACKOFF, ChildState.STOPPED}),
}

#: states in which the child has (or may have) a live process
HAS_PROCESS = frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPING})
#: states in which nothing runs and nothing will until asked
AT_REST = frozenset({ChildState.STOPPED, ChildState.FATAL})


class InvalidTransition(RuntimeError):
    """A transition not in :data:`TRANSITIONS`: a bug in the arbiter, never a user error."""


def check_transition(old: ChildState, new: ChildState) -> None:
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"{old.name} -> {new.name} is not allowed")
