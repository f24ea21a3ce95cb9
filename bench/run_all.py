"""Runs every benchmark in bench/, collects bench/results.json and the summary table of
docs/benchmarks.md (what ``make bench`` does).

Each ``bench_*.py`` runs as its own process with ``--json <tmp>`` (plus shorter settings with
``--quick``); a script that fails or skips (e.g. root-only netns benchmarks when not root) is
recorded with its exit code and last output lines, and the others still run. The summary table
(metric, value, target, met?) replaces only what is between ``<!-- bench:summary:start -->`` and
``<!-- bench:summary:end -->`` (inserted after the title the first time); the per-benchmark
sections are left alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
START = "<!-- bench:summary:start -->"
END = "<!-- bench:summary:end -->"

#: script -> extra arguments for --quick
QUICK: dict[str, list[str]] = {
    "bench_allocate.py": ["--calls", "300", "--starts", "2"],
    "bench_supervisor.py": ["--idle", "3"],
    "bench_link_health.py": ["--toggles", "30"],
    "bench_kubelet_restart.py": ["--restarts", "10"],
    "bench_scale.py": ["--quick"],
    "bench_chaos.py": ["--quick"],
}
ORDER = list(QUICK)

Row = tuple[str, str, str, bool | None]  # metric, value, target, met


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "root": os.geteuid() == 0,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# -- one summary extractor per script ------------------------------------------------------------


def _allocate(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    allocs = d.get("allocate", [])
    if allocs:
        worst = max(allocs, key=lambda r: r["alloc_p99_us"])
        rows.append(
            (
                f"Allocate p99, worst driver ({worst['driver']}, {worst['devices']} ids)",
                f"{worst['alloc_p99_us'] / 1000:.2f} ms",
                "< 2 ms",
                worst["alloc_p99_us"] < 2000,
            )
        )
        ratio = max(allocs, key=lambda r: r["ratio_p50"])
        rows.append(
            (
                "Allocate p50 / no-op p50, worst",
                f"{ratio['ratio_p50']:.2f}",
                "<= 1.2",
                ratio["ratio_p50"] <= 1.2,
            )
        )
    reg = d.get("registered_ms", [])
    if reg:
        rows.append(
            (
                "worker start -> registered, 256 VFs (max)",
                f"{max(reg):.0f} ms",
                "< 500 ms",
                max(reg) < 500,
            )
        )
    return rows


def _supervisor(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in d.get("results", []):
        tag = f"{r['pools']} pools x {r['vfs_per_pool']} VFs, {r['mode']}"
        rows.append(
            (
                f"run -> all registered ({tag})",
                f"{r['registered_s']:.2f} s",
                "< 1 s",
                r["registered_s"] < 1.0,
            )
        )
        rows.append((f"tree PSS ({tag})", f"{r['pss_mb']:.1f} MB", "< 100 MB", r["pss_mb"] < 100))
        rows.append(
            (
                f"idle CPU per 10 s ({tag})",
                f"{r['idle_cpu_ms']:.1f} ms",
                "< 20 ms",
                r["idle_cpu_ms"] < 20,
            )
        )
    return rows


def _p99(name: str, target_ms: float) -> Callable[[dict[str, Any]], list[Row]]:
    def extract(d: dict[str, Any]) -> list[Row]:
        res = d.get("results", [])
        if not res:
            return []
        p99 = res[0]["p99_ms"]
        tag = f"{d.get('pools')} pools x {d.get('vfs_per_pool')} VFs"
        return [(f"{name} p99 ({tag})", f"{p99:.1f} ms", f"< {target_ms:g} ms", p99 < target_ms)]

    return extract


def _scale(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in d.get("results", []):
        tag = f"{r['vfs_total']} VFs, {r['pools']} pool(s)"
        rows.append(
            (
                f"run -> registered ({tag})",
                f"{r['registered_s']:.2f} s",
                "< 3 s",
                r["registered_s"] < 3.0,
            )
        )
        rows.append(
            (
                f"Allocate p99 ({tag})",
                f"{r['allocate_p99_ms']:.2f} ms",
                "< 2 ms",
                r["allocate_p99_ms"] < 2.0,
            )
        )
    return rows


def _chaos(d: dict[str, Any]) -> list[Row]:
    tag = f"{d['pools']} pools, {d['seconds']:.0f} s, {len(d['events'])} faults"
    return [
        (
            f"chaos: unexpected Allocate failures ({tag})",
            str(d["failed_unexpected"]),
            "0",
            d["failed_unexpected"] == 0,
        ),
        (
            "chaos: allocations attempted / failed while own worker or kubelet down",
            f"{d['attempted']} / {d['failed_own_kill'] + d['failed_kubelet_restart']}",
            "-",
            None,
        ),
        (
            "chaos: longest time a pool was unregistered",
            f"{d['unregistered_s_max']:.2f} s",
            "-",
            None,
        ),
    ]


EXTRACT: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "bench_allocate.py": _allocate,
    "bench_supervisor.py": _supervisor,
    "bench_link_health.py": _p99("link down -> Unhealthy at the kubelet", 20),
    "bench_kubelet_restart.py": _p99("kubelet restart -> all registered", 300),
    "bench_scale.py": _scale,
    "bench_chaos.py": _chaos,
}


def run_one(script: str, quick: bool, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        argv = [sys.executable, str(BENCH / script), "--json", str(out)]
        if quick:
            argv += QUICK.get(script, [])
        print(f"== {script} {' '.join(argv[4:])}", flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
            )
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = -1, str(exc.stdout or ""), f"timed out after {timeout:.0f} s"
        elapsed = time.monotonic() - t0
        print(stdout, end="", flush=True)
        if stderr.strip():
            print("\n".join(stderr.strip().splitlines()[-5:]), flush=True)
        entry: dict[str, Any] = {"exit_code": rc, "seconds": round(elapsed, 1)}
        if out.exists():
            entry["data"] = json.loads(out.read_text())
        else:
            entry["skipped"] = (stderr.strip() or stdout.strip()).splitlines()[-1:] or ["no output"]
        return entry


def summary(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        START,
        "## Summary",
        "",
        f"Generated by `make bench` (`bench/run_all.py`) on {m['date']}: {m['cpu']}, {m['cores']} "
        f"cores, {m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}"
        f"{'' if m['root'] else ', not root'}{', quick settings' if results['quick'] else ''}. "
        "Raw numbers: `bench/results.json`. One run on a machine shared with other work: treat "
        "latency tails as noisy.",
        "",
        "| benchmark | metric | value | target | met? |",
        "|---|---|---|---|---|",
    ]
    for script in ORDER:
        entry = results["benchmarks"].get(script)
        if entry is None:
            continue
        if "data" not in entry:
            why = " ".join(entry.get("skipped", [])).replace("|", "/")
            lines.append(f"| {script} | not run (exit {entry['exit_code']}): {why} | - | - | - |")
            continue
        try:
            rows = EXTRACT[script](entry["data"])
        except (KeyError, TypeError, ValueError) as exc:
            lines.append(f"| {script} | results not understood: {exc!r} | - | - | - |")
            continue
        for metric, value, target, met in rows:
            verdict = "-" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {script} | {metric} | {value} | {target} | {verdict} |")
    lines.append(END)
    return "\n".join(lines)


def update_markdown(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        first, _, rest = text.partition("\n")
        text = f"{first}\n\n{block}\n\n{rest.lstrip()}"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", type=Path, default=BENCH / "results.json")
    parser.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="shorter settings for every script")
    parser.add_argument("--only", action="append", help="run only this script (repeatable)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per script at most")
    args = parser.parse_args(argv)
    scripts = args.only or ORDER
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    for script in scripts:
        results["benchmarks"][script] = run_one(script, args.quick, args.timeout)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    block = summary(results)
    update_markdown(args.markdown, block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
