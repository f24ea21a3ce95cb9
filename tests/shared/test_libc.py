"""sriovdp.shared.libc: the libc calls, looked up once at import (real processes, real prctl)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from sriovdp.shared import libc
from tests.harness.forked import in_child

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="prctl and glibc malloc: Linux")


def _death_signal() -> str:
    # a grandchild with PDEATHSIG=SIGTERM outlives its parent (this child) only if unarmed
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        libc.set_parent_death_signal(signal.SIGTERM)
        os.write(w, b"x")
        time.sleep(30)
        os._exit(0)
    os.read(r, 1)
    return str(pid)


def test_parent_death_signal_ends_the_grandchild_with_its_parent() -> None:
    code, out = in_child(_death_signal)
    assert code == 0
    grandchild = int(out)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{grandchild}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    break  # dead, waiting for init to reap it
        except FileNotFoundError:
            break
        time.sleep(0.02)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the grandchild outlived its parent: PR_SET_PDEATHSIG not armed")


def test_malloc_trim_and_prctl_answer_with_glibc() -> None:
    assert libc.malloc_trim() in (True, False)  # 1 or 0 from glibc: nothing to assert on size
    assert libc.prctl(-1, 0) is False  # EINVAL: the wrapper reports failure, raises nothing
