"""Link health benchmark: ``ip link set <pf> down`` to the Unhealthy list at the kubelet (root).

A simulated node with one pool per PF (default 8 PFs x 8 VFs) and a veth per PF netdev in a fresh
network namespace; the real supervisor runs inside that namespace, the kubelet stand-in in this
process. Each toggle writes ``link set <pf> down`` to a long-running ``ip -batch`` process (so no
process start is timed) and measures until the stand-in's latest ListAndWatch list of that pool
shows every VF Unhealthy; then the same for ``up`` and Healthy. PFs are toggled in turn.

Target: p99 of ``down`` under 20 ms. Prints a table; ``--json PATH`` writes the results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._stats import latency_ms  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    SimNode,
    create_netns,
    delete_netns,
    pf_netdev,
)

TARGETS = {"down_p99_ms": 20.0}


def summarize(name: str, samples: list[float]) -> dict[str, Any]:
    return {"event": name, **latency_ms(samples, digits=2)}


def run(pools: int, vfs: int, toggles: int, timeout: float) -> dict[str, Any]:
    ns = create_netns(pools)
    node = SimNode(pools, vfs, netns=ns.name)
    ip = subprocess.Popen(
        ["ip", "-n", ns.name, "-batch", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert ip.stdin is not None
    down: list[float] = []
    up: list[float] = []
    try:
        node.start_supervisor()
        k = node.stand_in()
        if not k.wait_for(node.all_registered(), 60):
            raise SystemExit(f"pools did not register:\n{node.log_text()}")
        for i in range(toggles):
            p = i % pools
            for state, healthy, samples in (("down", False, down), ("up", True, up)):
                t0 = time.monotonic()
                ip.stdin.write(f"link set {pf_netdev(p)} {state}\n".encode())
                ip.stdin.flush()
                if not k.wait_for(node.pool_is(p, healthy), timeout):
                    raise SystemExit(f"toggle {i}: pool {p} never {state}:\n{node.log_text()}")
                samples.append(time.monotonic() - t0)
    finally:
        ip.stdin.close()
        ip.wait(10)
        node.close()
        delete_netns(ns)
    return {
        "pools": pools,
        "vfs_per_pool": vfs,
        "toggles": toggles,
        "results": [summarize("down->Unhealthy", down), summarize("up->Healthy", up)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--vfs", type=int, default=8, help="VFs per PF (= per pool)")
    parser.add_argument("--toggles", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per toggle at most")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_link_health needs root (network namespaces)", file=sys.stderr)
        return 2
    out = run(args.pools, args.vfs, args.toggles, args.timeout)
    print(f"{out['pools']} pools x {out['vfs_per_pool']} VFs, {out['toggles']} toggles each way")
    cols = ["event", "n", "p50_ms", "p99_ms", "max_ms", "mean_ms"]
    print("  ".join(f"{c:>16}" for c in cols))
    for row in out["results"]:
        print("  ".join(f"{row[c]!s:>16}" for c in cols))
    p99 = out["results"][0]["p99_ms"]
    verdict = "met" if p99 < TARGETS["down_p99_ms"] else "MISSED"
    print(f"target down p99 < {TARGETS['down_p99_ms']} ms: {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"targets": TARGETS, **out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
