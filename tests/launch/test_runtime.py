"""StopFlag (every child process's stop signal): the handler must never block the main thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sriovdp.launch import runtime
from sriovdp.launch.runtime import StopFlag
from tests.harness.forked import in_child

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

# Many short waits, each ended by a signal at a random moment: with a handler that takes a lock
# the main thread may hold (threading.Event.set() while the main thread is inside Event.wait()),
# one of them deadlocks the process for ever. Before the fix this hung in most runs of 300.
_SIGNAL_DURING_WAIT = textwrap.dedent(
    """
    import random, signal, sys
    from sriovdp.launch.runtime import StopFlag

    for _ in range(int(sys.argv[1])):
        flag = StopFlag()
        flag.install(signal.SIGALRM)
        signal.setitimer(signal.ITIMER_REAL, random.uniform(0.0001, 0.002))
        while not flag.wait(0.0001):
            pass
        assert flag.signal == signal.SIGALRM
        flag.close()
    print("done")
    """
)


def _python(code: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def test_a_signal_during_wait_never_deadlocks_the_main_thread() -> None:
    # the bound is for a hang, not a measurement: the loop takes about a second
    out = _python(_SIGNAL_DURING_WAIT, "1000", timeout=90)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr


def test_wait_without_timeout_returns_when_signalled() -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys
        from sriovdp.launch.runtime import StopFlag

        flag = StopFlag()
        flag.install()
        print("waiting", flush=True)
        assert flag.wait(None) and flag.is_set() and flag.signal == signal.SIGTERM
        assert flag.wait(0) and flag.wait(None)  # stays set
        print("stopped", flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert proc.stdout.read().strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unset_flag_waits_out_its_timeout() -> None:
    flag = StopFlag()
    previous = signal.getsignal(signal.SIGUSR2)
    flag.install(signal.SIGUSR2)  # not TERM: this is the test process
    try:
        assert not flag.is_set()
        assert flag.wait(0) is False
        assert flag.wait(-1) is False  # a deadline already passed is not an error
        assert flag.signal is None
        signal.raise_signal(signal.SIGUSR2)
        assert flag.wait(5) is True
        assert flag.signal == signal.SIGUSR2
    finally:
        flag.close()
        signal.signal(signal.SIGUSR2, previous)


def test_comm_tells_pools_apart_within_15_bytes() -> None:
    names = ["intel-com_sriov_net_A", "intel-com_newpool", "example-com_sriov_net_A", "a_b"]
    comms = [runtime.comm_for(n) for n in names]
    assert all(len(c.encode()) <= 15 for c in comms)
    assert len(set(comms)) == len(comms)
    assert runtime.comm_for("a_b") == "sdp-a_b"
    assert runtime.comm_for("intel-com_sriov_net_A").endswith("_net_A")


def _named() -> str:
    runtime.name_process("sriov-dp worker intel.com/sriov_net_A", "sdp-x-much-too-long-name")
    comm = Path("/proc/self/comm").read_text().strip()
    cmdline = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0 ").decode()
    return f"{comm}|{cmdline}"


def test_name_process_sets_title_and_comm() -> None:
    code, out = in_child(_named)
    assert code == 0
    assert out == "sdp-x-much-too-|sriov-dp worker intel.com/sriov_net_A"
