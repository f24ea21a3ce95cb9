"""Kubelet restart benchmark: a new ``kubelet.sock`` to every pool registered again.

A simulated node with one pool per PF (default 8 pools x 8 VFs), the real supervisor (started on
``$SRIOVDP_BENCH_PYTHON``, see bench_supervisor.py) and the kubelet stand-in in this process.
Each restart does what a kubelet restart does: stop serving, delete every unix socket in the
plugin directory, then serve a new ``kubelet.sock``. The clock starts just before the new
``kubelet.sock`` is bound and measures:

- ``registered``: until the last pool's Register of this generation was answered (the stand-in
  answers only after dialling the plugin back, as the kubelet does);
- ``listed``: until every pool's new ListAndWatch stream delivered its complete device list.

No root needed. Target: p99 of ``registered`` <= 100 ms. Prints a table; ``--json PATH`` writes
the results; ``--quick`` does 20 restarts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._stats import latency_ms  # noqa: E402
from bench.bench_supervisor import start_tree, tree_info  # noqa: E402
from sriovdp.simnode.kubelet import unix_sockets  # noqa: E402
from tests.integration.conftest import SimNode, resource  # noqa: E402

TARGETS = {"registered_p99_ms": 100.0}


def summarize(name: str, samples: list[float]) -> dict[str, Any]:
    return {"measure": name, **latency_ms(samples, digits=1)}


def run(pools: int, vfs: int, restarts: int, timeout: float, spawn_mode: str) -> dict[str, Any]:
    node = SimNode(pools, vfs, spawn_mode=spawn_mode)
    registered: list[float] = []
    listed: list[float] = []
    try:
        start_tree(node)
        k = node.stand_in()
        if not k.wait_for(node.all_registered(), 60):
            raise SystemExit(f"pools did not register:\n{node.log_text()}")
        for i in range(restarts):
            k.stop()
            for path in unix_sockets(node.plugin_dir):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            t0 = time.monotonic()
            k.start()
            if not k.wait_for(node.all_registered(generation=k.generation), timeout):
                raise SystemExit(f"restart {i}: pools did not register again:\n{node.log_text()}")
            listed.append(time.monotonic() - t0)
            last = max(
                r.time
                for r in k.registrations
                if r.generation == k.generation
                and r.resource in {resource(p) for p in range(pools)}
            )
            registered.append(last - t0)
    finally:
        node.close()
    return {
        "pools": pools,
        "vfs_per_pool": vfs,
        "restarts": restarts,
        "spawn_mode": spawn_mode,
        "results": [summarize("registered", registered), summarize("listed", listed)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--vfs", type=int, default=8, help="VFs per PF (= per pool)")
    parser.add_argument("--restarts", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per restart at most")
    parser.add_argument("--spawn-mode", choices=("zygote", "exec"), default="zygote")
    parser.add_argument("--quick", action="store_true", help="20 restarts")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    restarts = min(args.restarts, 20) if args.quick else args.restarts
    info = tree_info()
    out = run(args.pools, args.vfs, restarts, args.timeout, args.spawn_mode)
    out.update(info)
    print(
        f"{out['pools']} pools x {out['vfs_per_pool']} VFs, {out['restarts']} kubelet restarts "
        f"({out['spawn_mode']}; tree on Python {info['tree_python_version']}, {info['install']} "
        "install)"
    )
    cols = ["measure", "n", "p50_ms", "p99_ms", "max_ms", "mean_ms"]
    print("  ".join(f"{c:>12}" for c in cols))
    for row in out["results"]:
        print("  ".join(f"{row[c]!s:>12}" for c in cols))
    p99 = out["results"][0]["p99_ms"]
    verdict = "met" if p99 <= TARGETS["registered_p99_ms"] else "MISSED"
    print(f"target registered p99 <= {TARGETS['registered_p99_ms']} ms: {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"targets": TARGETS, **out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
