"""Run a function in a forked child of the test process and get back what it returned (tests).

For what must happen in another process but needs nothing new loaded: dropping privileges,
changing process-wide state (a profile, ``ctypes``) that the test process must keep.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def in_child(body: Callable[[], str]) -> tuple[int, str]:
    """Forks; the child runs ``body`` and writes the text it returns. Returns (the child's exit
    code, that text): 0 when ``body`` returned, 1 when it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, body().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out
