"""Fixtures for the health monitor and kubelet watcher tests: a bus broker, bus listeners, netns.

The broker runs in a thread of the test process, as in ``tests/supervisor/test_broker.py``; the
processes under test are started for real (``python -m sriovdp.workers <role>``), inside a fresh
network namespace when they need links. Namespaces are named uniquely per test and deleted after.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq

from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import Envelope, LinkState, Message
from sriovdp.supervisor.broker import Broker

IS_ROOT = os.geteuid() == 0
HAS_IP = shutil.which("ip") is not None
needs_netns = pytest.mark.skipif(
    not (IS_ROOT and HAS_IP),
    reason="needs root and iproute2 to create network namespaces and veth pairs",
)

_ns_counter = itertools.count()


class BrokerThread:
    """The supervisor's bus broker, run in a thread of the test process."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.broker = Broker(self.ctx, run_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.broker.pull, zmq.POLLIN)
        poller.register(self.broker.xpub, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(20):
                if sock is self.broker.pull:
                    self.broker.handle_pull()
                else:
                    self.broker.handle_xpub()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.broker.close()
        self.ctx.term()


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

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
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


class NetNS:
    """A network namespace of a test, driven with iproute2."""

    def __init__(self, name: str) -> None:
        self.name = name

    def ip(self, *args: str) -> str:
        out = subprocess.run(
            ["ip", "-n", self.name, *args], check=True, capture_output=True, text=True
        )
        return out.stdout

    def batch(self, commands: list[str]) -> None:
        """Runs many ``ip`` commands in one process (fast enough to flood netlink)."""
        subprocess.run(
            ["ip", "-n", self.name, "-batch", "-"],
            input="\n".join(commands) + "\n",
            check=True,
            capture_output=True,
            text=True,
        )

    def add_veth(self, name: str, peer: str, up: bool = True) -> None:
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        if up:
            self.ip("link", "set", name, "up")
            self.ip("link", "set", peer, "up")

    def kernel_links(self) -> dict[str, tuple[str, bool]]:
        """ifname -> (operstate, carrier) as the kernel reports them now."""
        links = json.loads(self.ip("-j", "link", "show"))
        return {
            link["ifname"]: (link["operstate"], "LOWER_UP" in link.get("flags", []))
            for link in links
        }

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture
def netns() -> Iterator[NetNS]:
    if not (IS_ROOT and HAS_IP):
        pytest.skip("needs root and iproute2 to create network namespaces and veth pairs")
    name = f"sdpt-{os.getpid()}-{next(_ns_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ns = NetNS(name)
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


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
            self.popen.wait(5)
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
