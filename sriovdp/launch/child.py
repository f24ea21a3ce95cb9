"""The first steps of every child process, forked by the zygote or spawned by the supervisor
(runs in each child, before its role's ``main``).

A child's life is tied to the supervisor's, never to the zygote's: the zygote forks each worker
through a short-lived intermediate process, so the worker is re-parented at once to the
supervisor (a child subreaper) and arms ``PR_SET_PDEATHSIG`` against it. A SIGKILL of the zygote
therefore leaves every worker running; a SIGKILL of the supervisor ends them all.

``python -m sriovdp.launch.child PARENT ENTRY ARGV...`` is the exec spawner's launcher: a fresh
interpreter that does the same and runs ENTRY's ``main(argv)``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from sriovdp.shared import libc

log = logging.getLogger(__name__)

#: added to a child's inherited ``oom_score_adj``: under memory pressure the kernel takes one
#: pool's process (restarted in about a second) before the supervisor or the zygote. Raising the
#: score needs no capability; lowering it would (CAP_SYS_RESOURCE), so the supervisor keeps its own.
CHILD_OOM_SCORE_BONUS = 500
OOM_SCORE_ADJ_MAX = 1000
#: how long a forked child waits to be re-parented to the supervisor (normally well under 1 ms)
REPARENT_TIMEOUT_S = 5.0


def raise_oom_score(bonus: int = CHILD_OOM_SCORE_BONUS, proc: Path = Path("/proc")) -> int | None:
    """Adds ``bonus`` to this process's ``oom_score_adj`` (capped at 1000); returns the new value,
    or None where /proc does not allow it (logged once, never fatal)."""
    path = proc / "self" / "oom_score_adj"
    try:
        current = int(path.read_text().strip() or 0)
        wanted = min(OOM_SCORE_ADJ_MAX, current + bonus)
        if wanted != current:
            path.write_text(f"{wanted}\n")
    except (OSError, ValueError) as exc:
        log.warning("oom_score_adj not raised: %s", exc)
        return None
    return wanted


def bind_life_to(parent: int, sig: int = signal.SIGTERM) -> None:
    """Arms ``PR_SET_PDEATHSIG`` (``sig``) against ``parent``, which must already be this
    process's parent; exits at once if ``parent`` is gone (no orphan keeps a socket).

    The kernel sends the signal when the current parent exits, whoever that is; a child forked
    through an intermediate must call this only once the intermediate has exited
    (:func:`wait_for_parent`), or the intermediate's exit would kill it.
    """
    libc.set_parent_death_signal(sig)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(0)


def wait_for_parent(parent: int, timeout: float = REPARENT_TIMEOUT_S) -> bool:
    """Waits until ``getppid()`` is ``parent`` (this process's intermediate has exited and the
    supervisor, a child subreaper, took it over). False after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.0001
    while os.getppid() != parent:
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
    return True


def run_entry(entry: str, argv: Sequence[str]) -> int:
    """Imports ``entry`` and returns its ``main(argv)``; exceptions become exit code 1."""
    try:
        module = importlib.import_module(entry)
        sys.argv = [entry, *argv]
        code = module.main(list(argv))
        return int(code or 0)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def prepare_forked_child(name: str, supervisor: int, close: Sequence[int]) -> None:
    """A child forked by the zygote: default signal handling, the zygote's descriptors in
    ``close`` closed, re-parented to ``supervisor`` and bound to its life, first in line for the
    OOM killer. Each role's ``main`` names its process (``runtime.name_process``)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    if not wait_for_parent(supervisor):
        print(
            f"sriov-dp {name}: not re-parented to the supervisor (pid {supervisor}) within "
            f"{REPARENT_TIMEOUT_S:g} s; it must be a child subreaper",
            file=sys.stderr,
        )
        os._exit(1)
    bind_life_to(supervisor)
    raise_oom_score()


def exec_child(argv: list[str]) -> int:
    """``PARENT ENTRY ARGV...``: the exec spawner's child, tied to its parent's life."""
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m sriovdp.launch.child PARENT ENTRY [ARGV...]", file=sys.stderr)
        return 2
    bind_life_to(int(argv[0]))
    raise_oom_score()
    return run_entry(argv[1], argv[2:])


if __name__ == "__main__":
    sys.exit(exec_child(sys.argv[1:]))
