"""The few libc calls the ``os`` module lacks: ``prctl`` and ``malloc_trim`` (every process).

Where a function does not exist (not Linux, not glibc), the wrappers do nothing and return False.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _lookup(name: str) -> Callable[..., Any] | None:
    try:
        function: Callable[..., Any] = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    return function


_prctl = _lookup("prctl")
_malloc_trim = _lookup("malloc_trim")


def prctl(option: int, arg: int | bytes) -> bool:
    """``prctl(option, arg, 0, 0, 0)``; True when it succeeded."""
    return _prctl is not None and _prctl(option, arg, 0, 0, 0) == 0


def set_parent_death_signal(sig: int) -> bool:
    """The kernel sends ``sig`` to this process when the thread that forked it exits."""
    return prctl(PR_SET_PDEATHSIG, int(sig))


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process instead of to init."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def malloc_trim() -> bool:
    """Returns the free pages of every glibc malloc arena to the kernel; True if any were."""
    return _malloc_trim is not None and _malloc_trim(0) == 1
