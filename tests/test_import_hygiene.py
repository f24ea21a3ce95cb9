"""What each kind of process loads.

- The CLI and the supervisor must not load grpc, protobuf or pyroute2 (checked in a fresh
  interpreter, for every sriovdp.supervisor module that exists, found with pkgutil).
- The plugin worker speaks gRPC with grpcio: its modules load ``grpc._cython.cygrpc`` when
  imported (so a zygote preloads it) but create nothing (no thread: grpc's fork rules allow a
  fork with grpc imported, not with grpc objects alive). A real worker, forked from a parent that
  preloaded the worker modules as the zygote does, has grpcio's extension mapped and serves the
  kubelet with it. The health monitor and the kubelet watcher do not load grpc at all.
"""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sriovdp.supervisor
import sriovdp.workers

FORBIDDEN = ("grpc", "google.protobuf", "pyroute2")
MODULES = [
    "sriovdp.supervisor.cli",
    *sorted(
        info.name
        for info in pkgutil.walk_packages(sriovdp.supervisor.__path__, "sriovdp.supervisor.")
    ),
]

#: every module a plugin worker process can load: its entry and all of sriovdp.workers.plugin
PLUGIN_MODULES = [
    "sriovdp.workers.plugin.main",
    *sorted(
        info.name
        for info in pkgutil.walk_packages(
            [str(Path(sriovdp.workers.__file__).parent / "plugin")], "sriovdp.workers.plugin."
        )
    ),
]
#: the other roles of sriovdp.workers (no gRPC there)
OTHER_WORKERS = ["sriovdp.workers.health_monitor", "sriovdp.workers.kubelet_watcher"]

_PROBE = """
import importlib, json, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
forbidden = sys.argv[2].split(",")
print(json.dumps(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".")
                                                      for f in forbidden))))
"""

#: imports, then reports what is loaded and how many threads the process has (``/proc``
#: counts native threads too: C-core's would show)
_IMPORT_PROBE = """
import importlib, json, os, sys, threading
for name in sys.argv[1].split(","):
    importlib.import_module(name)
print(json.dumps({
    "cygrpc": "grpc._cython.cygrpc" in sys.modules,
    "python_threads": threading.active_count(),
    "tasks": len(os.listdir("/proc/self/task")),
}))
"""


def probe(modules: list[str], forbidden: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(modules), forbidden],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: list[str] = json.loads(out)
    return found


def test_the_supervisor_package_has_modules() -> None:
    assert "sriovdp.supervisor.cli_config" in MODULES
    assert "sriovdp.supervisor.options" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_no_heavy_dependency(module: str) -> None:
    assert probe([module], ",".join(FORBIDDEN)) == []


def test_probe_detects_a_violation() -> None:
    """The check itself can fail: a module that pulls protobuf is caught."""
    assert "google.protobuf" in probe(["sriovdp.proto.api_pb2"], ",".join(FORBIDDEN))


def test_plugin_worker_modules_load_grpcio_and_start_nothing() -> None:
    """One fresh interpreter imports the whole set, as the zygote does before it forks: grpcio's
    extension is loaded, and the process still has exactly one thread."""
    assert "sriovdp.workers.plugin.server" in PLUGIN_MODULES
    assert "sriovdp.workers.plugin.registration" in PLUGIN_MODULES
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, ",".join(PLUGIN_MODULES)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == {"cygrpc": True, "python_threads": 1, "tasks": 1}


def test_other_workers_import_no_grpc() -> None:
    assert probe(OTHER_WORKERS, "grpc") == []
    assert "grpc" in probe(["sriovdp.proto.api_pb2_grpc"], "grpc")  # the probe can fail


#: a zygote in miniature: the zygote's own preload plus every plugin module, then one fork whose
#: child runs the plugin worker's main; the parent prints the child's pid and its own thread
#: count, and exits with the child's status
_FORKER = """
import importlib, os, sys
from sriovdp.launch import zygote
zygote.preload()
for name in sys.argv[1].split(","):
    importlib.import_module(name)
pid = os.fork()
if pid == 0:
    from sriovdp.workers.plugin.main import main
    os._exit(main(sys.argv[2:]))
print(pid, len(os.listdir("/proc/self/task")), flush=True)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hyg", dir="/tmp"))  # unix socket paths stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(60)
def test_a_forked_plugin_worker_serves_with_grpcio(base: Path) -> None:
    from sriovdp.simnode import FakeSysfs, demo_config, demo_node
    from sriovdp.simnode.kubelet import KubeletStandIn

    sysfs = FakeSysfs(base / "sys")
    demo_node(sysfs.root)
    (base / "config.json").write_text(json.dumps(demo_config()))
    plugin_dir = base / "dp"
    plugin_dir.mkdir()
    kubelet = KubeletStandIn(plugin_dir)
    resource = "intel.com/sriov_vfio"
    argv = [
        "--name", "intel-com_sriov_vfio",
        "--config-file", str(base / "config.json"),
        "--plugin-dir", str(plugin_dir),
        "--sysfs-root", str(sysfs.root),
        "--proc-root", str(base / "proc"),
        "--devinfo-dir", str(base / "devinfo"),
        "--cdi-dir", str(base / "cdi"),
        "--dev-root", str(base / "devroot"),
    ]  # fmt: skip
    repo = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    )
    forker = subprocess.Popen(
        [sys.executable, "-c", _FORKER, ",".join(PLUGIN_MODULES), *argv],
        stdout=subprocess.PIPE,
        stderr=open(base / "worker.log", "wb"),  # noqa: SIM115
        env=env,
        cwd=repo,
        text=True,
    )
    try:
        assert forker.stdout is not None
        pid_text, parent_tasks = forker.stdout.readline().split()
        pid = int(pid_text)
        assert parent_tasks == "1"  # the preloading parent forked with no thread but its own
        assert kubelet.wait_for(
            lambda k: k.connected(resource) and k.lists_received(resource) > 0, 30
        ), (base / "worker.log").read_text()
        assert kubelet.allocate(resource, ["0000:04:00.4"]).envs  # served by the forked worker
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "grpc/_cython/cygrpc" in maps
        threads = {
            Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            for tid in os.listdir(f"/proc/{pid}/task")
        }
        assert {"grpc_global_tim", "event_engine"} <= threads  # C-core runs in the worker
        os.kill(pid, signal.SIGTERM)
        assert forker.wait(10) == 0
        deadline = time.monotonic() + 10
        while kubelet.connected(resource) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not kubelet.connected(resource)
    finally:
        if forker.poll() is None:
            forker.kill()
            forker.wait(5)
        kubelet.stop()
