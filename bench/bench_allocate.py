"""Allocate latency and time to registered of plugin workers (benchmark process, run by hand).

Builds a fake node with one pool per driver family (netdev: 256 iavf VFs; vfio, uio, rdma, vhost:
8 VFs each), starts a real worker per pool (``python -m sriovdp.workers plugin``, standalone, logs
at the default level to a file) against the kubelet stand-in in this process, then measures from a
separate client process over each worker's unix socket: Allocate of 1 and 4 devices, interleaved
call by call with a no-op RPC (GetDevicePluginOptions) on the same channel. Allocate rotates over
the pool's devices. Also: time from spawning the 256-VF worker to its Register being answered.

    .venv/bin/python bench/bench_allocate.py [--calls 2000] [--starts 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POOLS = {  # pool name -> (PF netdev, selector extras)
    "netdev": ("bnet", {}),
    "vfio": ("bvfio", {}),
    "uio": ("buio", {}),
    "rdma": ("brdma", {"isRdma": True}),
    "vhost": ("bvhost", {"needVhostNet": True}),
}


def build_node(base: Path) -> None:
    from sriovdp.simnode import FakeSysfs

    node = FakeSysfs(base / "sys")
    node.add_pf("0000:01:00.0", netdev="bnet", num_vfs=256, total_vfs=256, vf_driver="iavf")
    node.add_pf("0000:01:00.1", netdev="bvfio", num_vfs=8, vf_driver="vfio-pci")
    node.add_pf("0000:01:00.2", netdev="buio", num_vfs=8, vf_driver="igb_uio")
    node.add_pf("0000:01:00.3", netdev="brdma", driver="mlx5_core", device="1017",
                vf_device="1018", num_vfs=8, vf_driver="mlx5_core", rdma=True)  # fmt: skip
    node.add_pf("0000:01:00.4", netdev="bvhost", num_vfs=8, vf_driver="vfio-pci")
    (base / "devroot/dev/net").mkdir(parents=True)
    (base / "devroot/dev/vhost-net").touch()
    (base / "devroot/dev/net/tun").touch()
    pools = [
        {"resourceName": name, "selectors": {"pfNames": [pf], **extra}}
        for name, (pf, extra) in POOLS.items()
    ]
    (base / "config.json").write_text(json.dumps({"resourceList": pools}))
    (base / "dp").mkdir()


def worker_python() -> str:
    """The workers' interpreter: ``$SRIOVDP_BENCH_PYTHON`` (set per Python version by run_all)
    or this one. The client process stays on this one."""
    return os.environ.get("SRIOVDP_BENCH_PYTHON") or sys.executable


def spawn_worker(base: Path, pool: str, log: Any, level: str = "info") -> subprocess.Popen[bytes]:
    cmd = [
        worker_python(), "-m", "sriovdp.workers", "plugin", "--name", f"intel-com_{pool}",
        "--config-file", str(base / "config.json"), "--plugin-dir", str(base / "dp"),
        "--sysfs-root", str(base / "sys"), "--proc-root", str(base / "proc"),
        "--devinfo-dir", str(base / "devinfo"), "--cdi-dir", str(base / "cdi"),
        "--dev-root", str(base / "devroot"), "--log-level", level,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=REPO)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def client(socket: str, ids: list[str], size: int, calls: int) -> dict[str, Any]:
    """Runs in the client process: interleaved no-op and Allocate calls; latencies in µs."""
    import grpc

    from sriovdp.proto import api_pb2, api_pb2_grpc

    channel = grpc.insecure_channel(f"unix:{socket}")
    stub = api_pb2_grpc.DevicePluginStub(channel)
    empty = api_pb2.Empty()
    groups = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)] or [ids[:size]]
    requests = [
        api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=g)]
        )
        for g in groups
    ]
    noop: list[float] = []
    alloc: list[float] = []
    for i in range(calls + 200):
        t0 = time.perf_counter_ns()
        stub.GetDevicePluginOptions(empty)
        t1 = time.perf_counter_ns()
        stub.Allocate(requests[i % len(requests)])
        t2 = time.perf_counter_ns()
        if i >= 200:  # warm-up
            noop.append((t1 - t0) / 1000)
            alloc.append((t2 - t1) / 1000)
    channel.close()
    return {
        "noop_p50_us": statistics.median(noop),
        "noop_p99_us": pct(noop, 99),
        "alloc_p50_us": statistics.median(alloc),
        "alloc_p99_us": pct(alloc, 99),
        "calls": calls,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sriovdp.simnode.kubelet import KubeletStandIn

    base = Path(tempfile.mkdtemp(prefix="ba", dir="/tmp"))
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "worker_python": worker_python(),
        "allocate": [],
        "registered_ms": [],
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        build_node(base)
        kubelet = KubeletStandIn(base / "dp")
        log = open(base / "workers.log", "ab")  # noqa: SIM115
        # time to registered, 256-VF pool
        for _ in range(args.starts):
            count = len(kubelet.registrations)
            t0 = time.monotonic()
            proc = spawn_worker(base, "netdev", log)
            ok = kubelet.wait_for(lambda k, c=count: len(k.registrations) > c, 15)  # type: ignore[misc]
            if not ok:
                raise SystemExit("worker did not register; see " + str(base / "workers.log"))
            results["registered_ms"].append((kubelet.registrations[-1].time - t0) * 1000)
            proc.terminate()
            proc.wait(5)
        earlier = len(kubelet.registrations)
        for pool in POOLS:
            procs.append(spawn_worker(base, pool, log, args.log_level))
        resources = [f"intel.com/{p}" for p in POOLS]

        def all_new(k: KubeletStandIn) -> bool:
            # registered by the workers just started (the timing runs above left an endpoint)
            fresh = {r.resource for r in k.registrations[earlier:]}
            return all(r in fresh and k.lists_received(r) for r in resources)

        if not kubelet.wait_for(all_new, 20):
            raise SystemExit("workers did not register")
        for pool in POOLS:
            resource = f"intel.com/{pool}"
            ids = [d.id for d in kubelet.devices(resource)]
            sock = str(base / "dp" / (kubelet.endpoint(resource) or ""))
            for size in (1, 4):
                out = subprocess.run(
                    [sys.executable, __file__, "--client", sock, "--size", str(size),
                     "--calls", str(args.calls), "--ids", ",".join(ids[:32])],
                    check=True, capture_output=True, text=True, cwd=REPO,
                )  # fmt: skip
                row = {"driver": pool, "devices": size, **json.loads(out.stdout)}
                row["ratio_p50"] = row["alloc_p50_us"] / row["noop_p50_us"]
                results["allocate"].append(row)
        kubelet.stop()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)
        shutil.rmtree(base, ignore_errors=True)
    return results


def show(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}, Python {results['python']}")
    print(f"{'driver':8} {'ids':>3} {'alloc p50':>10} {'alloc p99':>10} "
          f"{'noop p50':>9} {'noop p99':>9} {'p50 ratio':>9}")  # fmt: skip
    for r in results["allocate"]:
        print(f"{r['driver']:8} {r['devices']:>3} {r['alloc_p50_us']:>8.0f}us "
              f"{r['alloc_p99_us']:>8.0f}us {r['noop_p50_us']:>7.0f}us {r['noop_p99_us']:>7.0f}us "
              f"{r['ratio_p50']:>9.2f}")  # fmt: skip
    reg = results["registered_ms"]
    print(f"start -> registered, 256 VFs: median {statistics.median(reg):.0f} ms, "
          f"max {max(reg):.0f} ms over {len(reg)} starts")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--json", type=Path)
    p.add_argument("--log-level", default="info", help="workers' log level (info: the default)")
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--ids", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        print(json.dumps(client(args.client, args.ids.split(","), args.size, args.calls)))
        return
    results = run(args)
    show(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
