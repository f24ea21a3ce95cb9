"""Chaos benchmark: 8 pools allocating continuously while random children are SIGKILLed and the
kubelet stand-in restarts at random (see tests/reliability/chaos.py for how failures are judged).
The supervisor runs on ``$SRIOVDP_BENCH_PYTHON`` (see bench_supervisor.py).

Prints the per-pool report: allocations attempted / ok / failed (own worker killed, kubelet
restart, unexpected), attempts skipped while unconnected, seconds unregistered. No root needed.
Target: 0 unexpected failures. ``--seconds`` (default 60, ``--quick``: 20), ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench_supervisor import start_tree, tree_info  # noqa: E402
from tests.integration.conftest import SimNode  # noqa: E402
from tests.reliability.chaos import Chaos  # noqa: E402

TARGETS = {"failed_unexpected": 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--vfs", type=int, default=4, help="VFs per PF (= per pool)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quick", action="store_true", help="20 s")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    seconds = min(args.seconds, 20.0) if args.quick else args.seconds
    info = tree_info()
    node = SimNode(args.pools, args.vfs)
    try:
        start_tree(node)
        k = node.stand_in()
        if not k.wait_for(node.all_registered(), 60):
            raise SystemExit(f"pools never registered:\n{node.log_text()}")
        report = Chaos(node, seconds, seed=args.seed).run()
        t0 = time.monotonic()
        recovered = k.wait_for(node.all_registered(), 60)
        recovery_s = time.monotonic() - t0
    finally:
        node.close()
    print(
        f"{args.pools} pools x {args.vfs} VFs, {seconds:g} s; tree on Python "
        f"{info['tree_python_version']} ({info['install']} install)"
    )
    print(report.table())
    print(f"all pools registered with full lists after the run: {recovered} ({recovery_s:.2f} s)")
    for p in report.pools:
        for error in p.unexpected_errors:
            print(f"unexpected: {p.resource} {error}")
    verdict = "met" if report.unexpected == 0 else "MISSED"
    print(f"target unexpected failures = 0: {verdict} ({report.unexpected})")
    out = {
        "targets": TARGETS,
        **info,
        "pools": args.pools,
        "vfs_per_pool": args.vfs,
        "seconds": seconds,
        "attempted": sum(p.attempted for p in report.pools),
        "failed_own_kill": sum(p.failed_own_kill for p in report.pools),
        "failed_kubelet_restart": sum(p.failed_kubelet_restart for p in report.pools),
        "failed_unexpected": report.unexpected,
        "unregistered_s_max": round(max(p.unregistered_s for p in report.pools), 2),
        # monotonic times, comparable with those of the unexpected errors in per_pool
        "events": [f"t={t:.3f} {e}" for t, e in report.events],
        "recovered": recovered,
        "per_pool": [p.row() for p in report.pools],
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if report.unexpected == 0 and recovered else 1


if __name__ == "__main__":
    sys.exit(main())
