"""Fixtures for the health monitor and kubelet watcher tests: a bus broker, bus listeners, netns.

The broker runs in a thread of the test process, as in ``tests/supervisor/test_broker.py``; the
processes under test are started for real (``python -m sriovdp.workers <role>``), inside a fresh
network namespace when they need links. Namespaces are named uniquely per test and deleted after.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import Envelope, LinkState, Message
from tests.harness.broker import BrokerThread
from tests.harness.netns import CAN_CREATE, SKIP_REASON, NetNS

needs_netns = pytest.mark.skipif(not CAN_CREATE, reason=SKIP_REASON)

_ns_counter = itertools.count()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short run directory (ipc:// paths must stay under the 107-byte unix socket limit)."""
    path = Path(tempfile.mkdtemp(prefix="sdp-", dir="/tmp"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def broker(run_dir: Path) -> Iterator[BrokerThread]:
    b = BrokerThread(run_dir)
    yield b
    b.stop()


@dataclass
class Listener:
    """A bus subscriber that keeps every message and the latest one per topic."""

    client: BusClient
    seen: list[Envelope] = field(default_factory=list)
    latest: dict[str, Message] = field(default_factory=dict)

    def pump(self, timeout_ms: int = 50) -> None:
        env = self.client.receive(timeout_ms)
        while env is not None:
            self.seen.append(env)
            self.latest[env.topic] = env.message
            env = self.client.receive(0)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Pumps messages until predicate() holds; False if it never did within timeout."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            self.pump(50)

    def link(self, ifname: str) -> LinkState | None:
        msg = self.latest.get(f"link.{ifname}.state")
        return msg if isinstance(msg, LinkState) else None

    def of_kind(self, cls: type[Message]) -> list[Message]:
        return [e.message for e in self.seen if isinstance(e.message, cls)]


@pytest.fixture
def listen(broker: BrokerThread) -> Iterator[Callable[..., Listener]]:
    clients: list[BusClient] = []

    def make(*prefixes: str) -> Listener:
        client = BusClient(broker.run_dir, f"test-listener-{len(clients)}", subscribe=prefixes)
        clients.append(client)
        return Listener(client)

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def netns() -> Iterator[NetNS]:
    if not CAN_CREATE:
        pytest.skip(SKIP_REASON)
    ns = NetNS.create(f"sdpt-{os.getpid()}-{next(_ns_counter)}")
    try:
        yield ns
    finally:
        ns.delete()


def worker_argv(role: str, name: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sriovdp.workers",
        role,
        "--name",
        name,
        "--run-dir",
        str(run_dir),
        "--log-level",
        "debug",
        *extra,
    ]


class Proc:
    """A worker process of a test with its stderr in a file."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.popen = popen
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(5)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; whatever still runs at teardown is killed."""
    started: list[Proc] = []
    yield started
    for p in started:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGCONT)
            p.kill()
