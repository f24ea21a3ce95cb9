"""A deliberately controllable fake child (a child process started by the supervisor in tests).

Runs as any role (``plugin``, ``health-monitor``, ...) as the module a test's supervisor names in
its options (``RunOptions.child_entry``) and speaks the real bus: READY once started, heartbeats,
a PoolSummary for the plugin role.
Its misbehaviour is steered by files in the directory named by ``FAKECHILD_KNOBS``, read at start
so a test can change them between restarts: ``<name>.exit`` (exit at once with the code inside),
``<name>.no-ready``, ``<name>.no-heartbeat``, ``<name>.ignore-term``, ``<name>.slow-start``
(seconds inside). Each start appends ``<pid>`` to ``<name>.starts``; a clean SIGTERM exit appends
it to ``<name>.stops``; a SIGHUP (reload in place) to ``<name>.reloads``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from sriovdp.launch.runtime import StopFlag
from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import PoolSummary, WorkerHeartbeat, WorkerReady

HEARTBEAT_INTERVAL = 0.2


def _arg(argv: list[str], flag: str, default: str = "") -> str:
    return argv[argv.index(flag) + 1] if flag in argv else default


def _knob(knobs: Path | None, name: str, knob: str) -> str | None:
    if knobs is None:
        return None
    path = knobs / f"{name}.{knob}"
    return path.read_text().strip() if path.exists() else None


def _append(knobs: Path | None, name: str, what: str) -> None:
    if knobs is not None:
        with (knobs / f"{name}.{what}").open("a") as f:
            f.write(f"{os.getpid()}\n")


def main(argv: list[str]) -> int:
    role = argv[0] if argv else "?"
    name = _arg(argv, "--name", role)
    run_dir = Path(_arg(argv, "--run-dir", "."))
    knobs_env = os.environ.get("FAKECHILD_KNOBS")
    knobs = Path(knobs_env) if knobs_env else None
    _append(knobs, name, "starts")
    code = _knob(knobs, name, "exit")
    if code is not None:
        return int(code)
    stop = StopFlag()
    stop.install()
    # a plugin worker takes a new config on SIGHUP: recorded in <name>.reloads
    signal.signal(signal.SIGHUP, lambda _s, _f: _append(knobs, name, "reloads"))
    if _knob(knobs, name, "ignore-term") is not None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    slow = _knob(knobs, name, "slow-start")
    if slow is not None:
        time.sleep(float(slow))
    bus = BusClient(run_dir, src=name)
    pid = os.getpid()
    try:
        if role == "plugin":
            bus.publish(PoolSummary(name, f"fake.io/{name}", pid, True, 4, 3, "fake serving"))
        if _knob(knobs, name, "no-ready") is None:
            bus.publish(WorkerReady(name, pid))
        beat = _knob(knobs, name, "no-heartbeat") is None
        while not stop.wait(HEARTBEAT_INTERVAL):
            if beat:
                bus.publish(WorkerHeartbeat(name, pid))
    finally:
        bus.close()
    _append(knobs, name, "stops")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
