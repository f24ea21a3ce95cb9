"""Fixtures for plugin worker tests: short temp dirs, fake nodes, the kubelet stand-in, a bus
broker in a thread, and real worker processes (``python -m sriovdp.workers plugin``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import zmq

from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import Envelope, Message
from sriovdp.shared.simnode import FakeSysfs, demo_config, demo_node
from sriovdp.shared.simnode.kubelet import KubeletStandIn
from sriovdp.supervisor.broker import Broker

REPO = Path(__file__).resolve().parents[3]


class Node:
    """A fake node: sysfs tree, config file and the directories a worker writes to.

    Lives in a short /tmp directory: unix socket paths must stay under 108 bytes.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sysfs = FakeSysfs(base / "sys")
        self.config_file = base / "config.json"
        self.plugin_dir = base / "dp"
        self.devinfo_dir = base / "devinfo"
        self.cdi_dir = base / "cdi"
        self.run_dir = base / "run"
        self.dev_root = base / "devroot"
        self.plugin_dir.mkdir()
        self.run_dir.mkdir(mode=0o700)

    def write_config(self, doc: dict[str, Any]) -> None:
        self.config_file.write_text(json.dumps(doc))

    def sockets(self) -> list[str]:
        return sorted(p.name for p in self.plugin_dir.iterdir() if p.is_socket())


class Worker:
    """One real worker process; its stderr goes to a file the test can read."""

    def __init__(self, node: Node, name: str, args: Sequence[str], env: dict[str, str]) -> None:
        self.node = node
        self.name = name
        self.log_path = node.base / f"{name}.{len(list(node.base.glob('*.log')))}.log"
        cmd = [
            sys.executable, "-m", "sriovdp.workers", "plugin",
            "--name", name,
            "--config-file", str(node.config_file),
            "--plugin-dir", str(node.plugin_dir),
            "--sysfs-root", str(node.sysfs.root),
            "--proc-root", str(node.base / "proc"),
            "--devinfo-dir", str(node.devinfo_dir),
            "--cdi-dir", str(node.cdi_dir),
            "--dev-root", str(node.dev_root),
            *args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)


class BrokerThread:
    """The supervisor's bus broker, run in a thread of the test process."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.seen: list[Envelope] = []
        self._cond = threading.Condition()
        self.broker = Broker(self.ctx, run_dir, on_message=self._record)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _record(self, env: Envelope) -> None:
        with self._cond:
            self.seen.append(env)
            self._cond.notify_all()

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

    def publish(self, message: Message) -> None:
        """Publishes through a producer client (the broker itself is not thread-safe)."""
        client = BusClient(self.run_dir, "test")
        client.publish(message)
        client.close()  # lingers until the message is handed to the broker

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> Envelope | None:
        """The first seen message for which ``predicate(env)`` holds, waiting up to ``timeout``."""
        with self._cond:
            found: list[Envelope] = []

            def check() -> bool:
                found[:] = [e for e in self.seen if predicate(e)]
                return bool(found)

            self._cond.wait_for(check, timeout)
            return found[0] if found else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.broker.close()
        self.ctx.term()


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def node() -> Iterator[Node]:
    base = Path(tempfile.mkdtemp(prefix="sp", dir="/tmp"))
    try:
        yield Node(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def demo(node: Node) -> Node:
    """The simnode demo node (2 PFs x 8 VFs: iavf, vfio-pci, igb_uio) with its config."""
    demo_node(node.sysfs.root)
    node.write_config(demo_config())
    return node


@pytest.fixture
def kubelet(node: Node) -> Iterator[KubeletStandIn]:
    k = KubeletStandIn(node.plugin_dir)
    yield k
    k.stop()


@pytest.fixture
def broker(node: Node) -> Iterator[BrokerThread]:
    b = BrokerThread(node.run_dir)
    yield b
    b.stop()


@pytest.fixture
def spawn(node: Node) -> Iterator[Any]:
    """``spawn(name, *args)`` starts a worker; all are terminated at the end of the test."""
    workers: list[Worker] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Worker:
        w = Worker(node, name, args, env or worker_env())
        workers.append(w)
        return w

    yield start
    for w in workers:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(5)
