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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sriovdp.simnode import FakeSysfs, demo_config, demo_node
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.harness.broker import BrokerThread

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

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)


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
