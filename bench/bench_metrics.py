"""What the metrics child costs (benchmark process, run by hand or by ``make bench``).

Starts a real supervisor tree on a simulated node (:class:`bench.bench_supervisor.Tree`, ``--pfs``
pools of ``--vfs`` VFs, the metrics child on ``127.0.0.1``, any free port) and measures:

- ``pss_mb``, ``idle_cpu_ms``: the metrics child's PSS (``smaps_rollup``) and the CPU time of its
  threads over an idle window (``--idle`` s, scaled to 10 s), nothing scraping it. The children
  start together, so their heartbeats (15 s apart, each one a wake-up of the metrics child) come
  in bursts: the window is a multiple of 15 s, else it may catch none;
- Allocate latency of one device, back to back from this process through the kubelet stand-in,
  round-robin over the pools, in alternating blocks of ``--block`` seconds: quiet, then while a
  separate process GETs ``/metrics`` every second, and so on, ``--duration`` seconds of each
  (blocks, not two long phases: the machine drifts over minutes); p50/p99 of each condition;
- ``scrape_ms``: how long each of those GETs took, and the size of the text;
- ``pss_after_mb``: the child's PSS after the scraping.

    .venv/bin/python bench/bench_metrics.py [--duration 60] [--idle 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._stats import latency_ms  # noqa: E402
from bench.bench_supervisor import Tree, cpu_ns, rollup_kb, tree_info  # noqa: E402
from sriovdp.simnode import vf_address  # noqa: E402
from sriovdp.supervisor.client import ControlClient  # noqa: E402

SCRAPER = textwrap.dedent(
    """
    import json, sys, time, urllib.request
    url, seconds = sys.argv[1], float(sys.argv[2])
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        body = urllib.request.urlopen(url, timeout=5).read()
        out.append((time.perf_counter() - t, len(body)))
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))
    print(json.dumps(out))
    """
)


class MetricsTree(Tree):
    def argv(self) -> list[str]:
        return [*super().argv(), "--metrics-address", "127.0.0.1:0"]


def status(tree: Tree) -> dict[str, Any]:
    with ControlClient(tree.base / "run") as client:
        result: dict[str, Any] = client.request("status")
    return result


def allocate_for(tree: Tree, seconds: float) -> list[float]:
    k = tree.stand_in
    pools = [(f"intel.com/pool{p}", f"0000:01:{p // 8:02x}.{p % 8}") for p in range(tree.pfs)]
    samples: list[float] = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        resource, pf = pools[i % len(pools)]
        vf = vf_address(pf, (i // len(pools)) % tree.vfs)
        started = time.perf_counter()
        k.allocate(resource, [vf])
        samples.append(time.perf_counter() - started)
        i += 1
    return samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    tree = MetricsTree(args.pfs, args.vfs)
    try:
        tree.start()
        tree.wait_registered({f"intel.com/pool{p}": args.vfs for p in range(args.pfs)})
        tree.wait_running()
        head = status(tree)
        bound = head["supervisor"]["metrics"]["bound"]
        (pid,) = [r["pid"] for r in head["children"] if r["name"] == "metrics"]
        time.sleep(2.0)  # settle: start-up garbage released, first reports in
        pss = rollup_kb(pid) / 1024
        before = cpu_ns(pid)
        time.sleep(args.idle)
        idle_ms = (cpu_ns(pid) - before) / 1e6 * 10.0 / args.idle

        quiet: list[float] = []
        scraped: list[float] = []
        scrapes: list[list[float]] = []
        scrape_cpu_ns = 0
        for _ in range(max(1, round(args.duration / args.block))):
            quiet += allocate_for(tree, args.block)
            scraper = subprocess.Popen(
                [sys.executable, "-c", SCRAPER, f"http://{bound}/metrics", str(args.block)],
                stdout=subprocess.PIPE,
            )
            cpu_before = cpu_ns(pid)
            scraped += allocate_for(tree, args.block)
            out, _ = scraper.communicate(timeout=args.block + 30)
            scrape_cpu_ns += cpu_ns(pid) - cpu_before
            scrapes += json.loads(out)
        scrape_cpu_ms = scrape_cpu_ns / 1e6
        return {
            "tree": f"{args.pfs}x{args.vfs}",
            **tree_info(),
            "metrics_child": {
                "pss_mb": round(pss, 2),
                "idle_cpu_ms_per_10s": round(idle_ms, 2),
                "pss_after_mb": round(rollup_kb(pid) / 1024, 2),
                "cpu_ms_while_scraped": round(scrape_cpu_ms, 1),
            },
            "scrapes": {
                "count": len(scrapes),
                "bytes": scrapes[-1][1] if scrapes else 0,
                **latency_ms([s for s, _ in scrapes]),
            },
            "allocate_ms": {
                "quiet": latency_ms(quiet, 3),
                "scraped_every_second": latency_ms(scraped, 3),
            },
        }
    finally:
        tree.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pfs", type=int, default=4, help="pools (one per PF)")
    parser.add_argument("--vfs", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per condition")
    parser.add_argument("--block", type=float, default=10.0, help="seconds per block")
    parser.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="20 s per condition, 15 s idle")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.block, args.idle = 20.0, 5.0, 15.0
    results = run(args)
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
