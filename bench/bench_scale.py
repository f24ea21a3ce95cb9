"""Scale benchmark: 16 PFs x 256 VFs = 4096 VFs, from ``run`` to registered, and Allocate p99.

A simulated node (``scale_node``), the real supervisor, the kubelet stand-in in this process.
Layouts: ``per-pf`` (default): 16 pools, one per PF, 256 VFs each (16 plugin workers);
``single``: one pool holding all 4096 VFs (one worker). Measures the time from spawning
``sriov-supervisor run`` until every pool's Register was answered with its complete device list
delivered on ListAndWatch, then Allocate latency (1 device, rotating over the pool's VFs) from
this process over the stand-in's own channel to the first pool.

No root needed. Targets: registered < 3 s, Allocate p99 < 2 ms. ``--json PATH`` writes the
results; ``--quick`` does fewer calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._stats import percentile  # noqa: E402
from sriovdp.simnode.kubelet import KubeletStandIn  # noqa: E402
from tests.integration.conftest import PREFIX, SimNode, pf_netdev  # noqa: E402

TARGETS = {"registered_s": 3.0, "allocate_p99_ms": 2.0}


def run(pfs: int, vfs: int, layout: str, calls: int) -> dict[str, Any]:
    node = SimNode(pfs, vfs)
    if layout == "single":
        names = [pf_netdev(p) for p in range(pfs)]
        doc = {"resourceList": [{"resourceName": "all", "selectors": {"pfNames": names}}]}
        node.config.write_text(json.dumps(doc))
        pools = {f"{PREFIX}/all": set().union(*(node.vfs(p) for p in range(pfs)))}
    else:
        pools = {f"{PREFIX}/pool{p}": node.vfs(p) for p in range(pfs)}

    def registered(k: KubeletStandIn) -> bool:
        return all(k.connected(r) and {d.id for d in k.devices(r)} == v for r, v in pools.items())

    try:
        k = node.stand_in()
        t0 = time.monotonic()
        node.start_supervisor()
        if not k.wait_for(registered, 120):
            raise SystemExit(f"pools never registered:\n{node.log_text()}")
        registered_s = time.monotonic() - t0
        first = sorted(pools)[0]
        ids = sorted(pools[first])
        stub = k.stub(first)
        from sriovdp.proto import api_pb2

        def request(i: int) -> Any:
            return api_pb2.AllocateRequest(
                container_requests=[
                    api_pb2.ContainerAllocateRequest(devices_ids=[ids[i % len(ids)]])
                ]
            )

        for i in range(min(200, calls)):  # warm-up
            stub.Allocate(request(i), timeout=5)
        lat = []
        for i in range(calls):
            req = request(i)
            t = time.perf_counter()
            stub.Allocate(req, timeout=5)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        node.close()
    return {
        "layout": layout,
        "pfs": pfs,
        "vfs_per_pf": vfs,
        "vfs_total": pfs * vfs,
        "pools": len(pools),
        "registered_s": round(registered_s, 3),
        "allocate_calls": calls,
        "allocate_p50_ms": round(statistics.median(lat), 3),
        "allocate_p99_ms": round(percentile(lat, 99), 3),
        "allocate_max_ms": round(max(lat), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pfs", type=int, default=16)
    parser.add_argument("--vfs", type=int, default=256, help="VFs per PF")
    parser.add_argument("--layout", choices=("per-pf", "single", "both"), default="both")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="500 Allocate calls")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    calls = min(args.calls, 500) if args.quick else args.calls
    layouts = ("per-pf", "single") if args.layout == "both" else (args.layout,)
    results = [run(args.pfs, args.vfs, layout, calls) for layout in layouts]
    for r in results:
        print(
            f"{r['layout']}: {r['vfs_total']} VFs in {r['pools']} pool(s): registered in "
            f"{r['registered_s']:.2f} s; Allocate p50 {r['allocate_p50_ms']:.2f} ms, "
            f"p99 {r['allocate_p99_ms']:.2f} ms, max {r['allocate_max_ms']:.2f} ms "
            f"({r['allocate_calls']} calls)"
        )
        for key, target in TARGETS.items():
            verdict = "met" if r[key] < target else "MISSED"
            print(f"  target {key} < {target}: {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"targets": TARGETS, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
