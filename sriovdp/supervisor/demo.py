"""``sriov-supervisor demo``: a simulated node, end to end (CLI process; imports grpc).

Builds a fake sysfs tree and config in a temporary directory, serves a kubelet stand-in in this
process, runs the real supervisor as a subprocess against them, and shows what an operator would
see: the node's allocatable resources, what a pod gets from one allocation, ``status``, and a clean
shutdown. Imported lazily by the ``demo`` command only, and grpc (through the kubelet stand-in)
only inside :func:`run_demo`: the supervisor process never loads either.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sriovdp.shared.model import DEFAULT_RESOURCE_PREFIX
from sriovdp.simnode import demo_config, demo_node
from sriovdp.supervisor.client import ControlClient, Unreachable
from sriovdp.supervisor.status import SupervisorStatus, render_table

if TYPE_CHECKING:
    from sriovdp.proto import api_pb2
    from sriovdp.simnode.kubelet import KubeletStandIn

REGISTER_TIMEOUT = 20.0
ALLOCATE_FROM = f"{DEFAULT_RESOURCE_PREFIX}/sriov_vfio"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _title(text: str) -> None:
    _say()
    _say(f"== {text}")


def _pod_view(answer: api_pb2.ContainerAllocateResponse) -> dict[str, Any]:
    return {
        "env": dict(sorted(answer.envs.items())),
        "devices": [
            {
                "container_path": d.container_path,
                "host_path": d.host_path,
                "permissions": d.permissions,
            }
            for d in answer.devices
        ],
        "mounts": [
            {"container_path": m.container_path, "host_path": m.host_path} for m in answer.mounts
        ],
        "annotations": dict(answer.annotations),
        "cdi_devices": [c.name for c in answer.cdi_devices],
    }


def run_demo(spawn_mode: str = "zygote", keep: bool = False) -> int:
    base = Path(tempfile.mkdtemp(prefix="sriov-dp-demo-"))
    try:
        return _run(base, spawn_mode)
    finally:
        if keep:
            _say(f"\nnode directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _run(base: Path, spawn_mode: str) -> int:
    from sriovdp.simnode.kubelet import KubeletStandIn  # grpc: this process only

    sysfs, plugins, run_dir = base / "sys", base / "device-plugins", base / "run"
    (base / "proc" / "net").mkdir(parents=True)
    (base / "proc" / "net" / "route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
    )
    plugins.mkdir()
    config_file = base / "config.json"
    demo_node(sysfs)
    config = demo_config()
    config_file.write_text(json.dumps(config, indent=2))
    _title(f"simulated node in {base}")
    _say("2 PFs x 8 VFs (iavf, vfio-pci, igb_uio), config with 3 pools:")
    for pool in config["resourceList"]:
        _say(f"  {pool['resourceName']}")

    kubelet = KubeletStandIn(plugins)
    log_path = base / "supervisor.log"
    argv = [sys.executable, "-m", "sriovdp", "run", "--config-file", str(config_file)]
    argv += ["--sysfs-root", str(sysfs), "--plugin-dir", str(plugins), "--run-dir", str(run_dir)]
    argv += ["--devinfo-dir", str(base / "devinfo"), "--cdi-dir", str(base / "cdi")]
    argv += ["--proc-root", str(base / "proc"), "--spawn-mode", spawn_mode]
    argv += ["--log-level", "warning"]
    # a demo listens on loopback only, on any free port (status shows which)
    argv += ["--metrics-address", "127.0.0.1:0"]
    started = time.monotonic()
    with log_path.open("wb") as log:
        supervisor = subprocess.Popen(argv, stdout=log, stderr=log)
    code = 1
    try:
        code = _exercise(kubelet, supervisor, run_dir, started, len(config["resourceList"]))
    finally:
        if supervisor.poll() is None:
            stop_started = time.monotonic()
            supervisor.send_signal(signal.SIGTERM)
            try:
                rc = supervisor.wait(10)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                rc = supervisor.wait()
            _title("shutdown")
            _say(f"SIGTERM -> supervisor exited {rc} in {time.monotonic() - stop_started:.2f}s")
            left = sorted(
                p.name for p in plugins.iterdir() if p.is_socket() and p.name != "kubelet.sock"
            )
            _say(f"plugin sockets left behind: {left or 'none'}")
            if rc != 0 or left:
                code = 1
        kubelet.stop()
        if code != 0:
            _say("\nsupervisor log:")
            _say(log_path.read_text(errors="replace")[-4000:])
    return code


def _exercise(
    kubelet: KubeletStandIn,
    supervisor: subprocess.Popen[bytes],
    run_dir: Path,
    started: float,
    pools: int,
) -> int:
    def all_up(k: KubeletStandIn) -> bool:
        alloc = k.allocatable()
        return len(alloc) == pools and all(v > 0 for v in alloc.values())

    if not kubelet.wait_for(all_up, REGISTER_TIMEOUT) or supervisor.poll() is not None:
        _say(f"pools did not register within {REGISTER_TIMEOUT:g}s: {kubelet.allocatable()}")
        return 1
    _title(f"all {pools} pools registered {time.monotonic() - started:.2f}s after `run`")
    _say("$ kubectl get node -o json | jq .status.allocatable")
    allocatable = {r: str(n) for r, n in sorted(kubelet.allocatable().items())}
    _say(json.dumps(allocatable, indent=2))

    devices = [d.id for d in kubelet.devices(ALLOCATE_FROM) if d.health == "Healthy"]
    _title(f"a pod asks for 1 x {ALLOCATE_FROM}; the kubelet calls Allocate({devices[:1]})")
    answer = kubelet.allocate(ALLOCATE_FROM, devices[:1])
    _say(json.dumps(_pod_view(answer), indent=2))

    _title("$ sriov-supervisor status")
    deadline = time.monotonic() + REGISTER_TIMEOUT
    with ControlClient(run_dir, timeout=2.0) as client:
        while True:  # the health monitor may still be finishing its first link dump
            try:
                status = SupervisorStatus.from_dict(client.request("status"))
            except Unreachable as exc:
                _say(f"status: {exc}")
                return 1
            if status.all_running or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    _say(render_table(status))
    if not status.all_running:
        return 1
    _say(f"(supervisor pid {status.pid}, children pids {[r.pid for r in status.children]})")
    return 0
