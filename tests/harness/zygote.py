"""A real zygote for tests (test process): its workers are re-parented to the test process, a
child subreaper while the zygote runs, as they are to the supervisor in production."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sriovdp.shared import libc
from sriovdp.supervisor.spawn import ZygoteSpawner, reap


@contextlib.contextmanager
def subreaper_zygote(reply_timeout: float = 30.0) -> Iterator[ZygoteSpawner]:
    """A started-on-demand :class:`ZygoteSpawner`; at the end the zygote is closed and reaped
    (what its workers left is the test's to reap) and the test process stops being a
    subreaper."""
    assert libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    spawner = ZygoteSpawner(reply_timeout=reply_timeout)
    try:
        yield spawner
    finally:
        spawner.close()
        deadline = time.monotonic() + 10
        while spawner.helper_pid() is not None and time.monotonic() < deadline:
            for pid, status in reap():
                spawner.reaped(pid, status)
            time.sleep(0.01)
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 0)
