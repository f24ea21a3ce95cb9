"""Runs every benchmark in bench/, collects bench/results.json and the summary table of
docs/benchmarks.md (what ``make bench`` does).

The supervisor trees (and bench_allocate's workers) run on the interpreters given with
``--tree-python`` (``make bench``: one image-like venv per Python version, ``.venv-image/<X.Y>``),
each labelled by its version; this process and the scripts' own processes (kubelet stand-in,
clients) stay on this interpreter. Each script in ``PER_VERSION`` runs once per tree interpreter,
the versions back to back (``$SRIOVDP_BENCH_PYTHON`` set to it), ``ONCE`` scripts run once here
(bench_link_health starts its tree itself, from the checkout on this interpreter). Every run
gets ``--json <tmp>`` (plus ``FULL`` or, with ``--quick``, ``QUICK`` arguments); a script that
fails or skips (e.g. root-only netns benchmarks when not root) is recorded with its exit code
and last output lines, and the others still run.

The summary table (metric, value, target, met?: :data:`TARGETS`, one row per Python version
where the number is per version) replaces only what is between ``<!-- bench:summary:start -->``
and ``<!-- bench:summary:end -->`` (inserted after the title the first time); the per-benchmark
sections are left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
START = "<!-- bench:summary:start -->"
END = "<!-- bench:summary:end -->"

#: scripts run once per tree interpreter, in this order
PER_VERSION = [
    "bench_supervisor.py",
    "bench_scale.py",
    "bench_allocate.py",
    "bench_kubelet_restart.py",
    "bench_chaos.py",
]
#: scripts run once, on this interpreter
ONCE = ["bench_link_health.py", "bench_uevent.py", "bench_metrics.py"]
ORDER = PER_VERSION + ONCE
#: script -> extra arguments for a full run (the whole of it a few minutes on 2 cores)
FULL: dict[str, list[str]] = {
    "bench_allocate.py": ["--calls", "600", "--starts", "2"],
    "bench_chaos.py": ["--seconds", "30"],
    "bench_metrics.py": ["--duration", "30", "--idle", "30"],
}
#: script -> extra arguments for --quick
QUICK: dict[str, list[str]] = {
    "bench_supervisor.py": ["--quick"],
    "bench_scale.py": ["--quick"],
    "bench_allocate.py": ["--calls", "300", "--starts", "2"],
    "bench_kubelet_restart.py": ["--quick"],
    "bench_chaos.py": ["--seconds", "10"],
    "bench_link_health.py": ["--toggles", "30"],
    "bench_uevent.py": ["--quick"],
    "bench_metrics.py": ["--quick"],
}

Row = tuple[str, str, str, bool | None]  # metric, value, target, met (None: no target)


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


# -- the target table -----------------------------------------------------------------------------


def _le(value: float, limit: float, fmt: str) -> tuple[str, bool]:
    return fmt.format(value), value <= limit


def _tree(d: dict[str, Any], tree: str) -> dict[str, Any]:
    """bench_supervisor's row for ``tree`` (``PxV``), the first spawn mode measured."""
    return next(r for r in d["results"] if r["tree"] == tree)


def _slope(d: dict[str, Any], small: str, big: str) -> float:
    return float(
        next(s for s in d["pss_slope"] if (s["from"], s["to"]) == (small, big))["mb_per_pool"]
    )


def _ratio(d: dict[str, Any]) -> tuple[str, bool]:
    worst = max(d["allocate"], key=lambda r: r["ratio_p50"])
    shown = f"{worst['ratio_p50']:.2f} (worst: {worst['driver']}, {worst['devices']} ids)"
    return shown, worst["ratio_p50"] <= 1.2


def _sigterm(d: dict[str, Any]) -> tuple[str, bool]:
    row = d["per_pf"]
    codes = sorted(set(row["exit_codes"]))
    shown = (
        f"{row['stop_s']:.2f} s (max {row['stop_s_max']:.2f} s), exit {'/'.join(map(str, codes))}"
    )
    return shown, row["stop_s"] <= 1.0 and codes == [0]


@dataclass(frozen=True)
class Target:
    """One row of the target table: per Python version, what ``measure`` makes of the script's
    JSON (shown value, met?); with ``only``, the target holds for that version and the others are
    reported beside it."""

    metric: str
    script: str
    target: str
    measure: Callable[[dict[str, Any]], tuple[str, bool]]
    only: str | None = None


TARGETS: list[Target] = [
    Target(
        "run -> all pools registered, 4 pools x 16 VFs",
        "bench_supervisor.py",
        "<= 0.8 s",
        lambda d: _le(_tree(d, "4x16")["registered_s"], 0.8, "{:.2f} s"),
    ),
    Target(
        "run -> all pools registered, 8 pools x 64 VFs",
        "bench_supervisor.py",
        "<= 1.0 s",
        lambda d: _le(_tree(d, "8x64")["registered_s"], 1.0, "{:.2f} s"),
    ),
    Target(
        "run -> registered, 16 pools x 256 VFs",
        "bench_scale.py",
        "<= 2.5 s",
        lambda d: _le(d["per_pf"]["registered_s"], 2.5, "{:.2f} s"),
    ),
    Target(
        "tree PSS, 8 pools x 64 VFs",
        "bench_supervisor.py",
        "<= 130 MB",
        lambda d: _le(_tree(d, "8x64")["pss_mb"], 130.0, "{:.1f} MB"),
        only="3.11",
    ),
    Target(
        "each added pool (PSS slope, 4 -> 8 pools x 64 VFs)",
        "bench_supervisor.py",
        "<= 12 MB",
        lambda d: _le(_slope(d, "4x64", "8x64"), 12.0, "{:.1f} MB"),
    ),
    Target(
        "idle CPU of the tree, 8 pools x 64 VFs, per 10 s",
        "bench_supervisor.py",
        "<= 30 ms",
        lambda d: _le(_tree(d, "8x64")["idle_cpu_ms"], 30.0, "{:.1f} ms"),
    ),
    Target("Allocate p50 / no-op RPC p50, every driver", "bench_allocate.py", "<= 1.2", _ratio),
    Target(
        "GetPreferredAllocation p50, one pool of 4096 VFs, size 8",
        "bench_scale.py",
        "<= 3 ms",
        lambda d: _le(d["single"]["preferred"]["p50_ms"], 3.0, "{:.2f} ms"),
    ),
    Target(
        "kubelet restart -> every pool registered again, p99 (8 pools x 8 VFs)",
        "bench_kubelet_restart.py",
        "<= 100 ms",
        lambda d: _le(d["results"][0]["p99_ms"], 100.0, "{:.1f} ms"),
    ),
    Target("SIGTERM -> exit 0, 16 pools", "bench_scale.py", "<= 1 s", _sigterm),
]


def _link_health(d: dict[str, Any]) -> list[tuple[str, str]]:
    tag = f"{d['pools']} pools x {d['vfs_per_pool']} VFs"
    return [(f"link down -> Unhealthy at the kubelet, p99 ({tag})", f"{r['p99_ms']:.1f} ms")
            for r in d["results"][:1]]  # fmt: skip


def _uevent(d: dict[str, Any]) -> list[tuple[str, str]]:
    tag = f"{d['pools']} pools x {d['vfs_per_pool']} VFs, {d['all']['n']} rebinds"
    return [
        (
            f"PCI function rebound -> list updated at the kubelet (uevent), p99 ({tag})",
            f"{d['all']['p99_ms']:.1f} ms (target < 1000 ms)",
        )
    ]


def _metrics(d: dict[str, Any]) -> list[tuple[str, str]]:
    child, alloc = d["metrics_child"], d["allocate_ms"]
    quiet, scraped = alloc["quiet"], alloc["scraped_every_second"]
    return [
        (
            f"metrics child: PSS / idle CPU per 10 s ({d['tree']})",
            f"{child['pss_mb']:.1f} MB / {child['idle_cpu_ms_per_10s']:.1f} ms",
        ),
        (
            "Allocate p50 / p99: quiet vs /metrics scraped every second",
            f"{quiet['p50_ms']:.2f} / {quiet['p99_ms']:.2f} ms vs "
            f"{scraped['p50_ms']:.2f} / {scraped['p99_ms']:.2f} ms",
        ),
    ]


def _chaos(d: dict[str, Any]) -> list[tuple[str, str]]:
    tag = f"{d['pools']} pools, {d['seconds']:g} s, {len(d['events'])} faults"
    return [
        (f"chaos: unexpected Allocate failures ({tag})", str(d["failed_unexpected"])),
        (
            "chaos: allocations attempted / failed while own worker or kubelet down",
            f"{d['attempted']} / {d['failed_own_kill'] + d['failed_kubelet_restart']}",
        ),
        ("chaos: longest time a pool was unregistered", f"{d['unregistered_s_max']:.2f} s"),
    ]


#: reported without a target, after the target rows
REPORTED: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "bench_link_health.py": _link_health,
    "bench_uevent.py": _uevent,
    "bench_metrics.py": _metrics,
    "bench_chaos.py": _chaos,
}

# -- running ---------------------------------------------------------------------------------------


def probe_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def tree_pythons(paths: list[str]) -> dict[str, dict[str, str]]:
    """Label (``X.Y``) -> path and full version of every tree interpreter."""
    out: dict[str, dict[str, str]] = {}
    for path in paths:
        version = probe_version(path)
        label = ".".join(version.split(".")[:2])
        while label in out:  # two interpreters of one version: both measured, told apart
            label += "'"
        out[label] = {"path": path, "version": version}
    return out


def run_bounded(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """Runs a script in its own process group: exit code, stdout, stderr. After ``timeout``
    seconds the group (the script and the supervisor tree it started) gets SIGINT, so that the
    script's ``finally`` blocks stop its tree and remove its temp dirs, then SIGKILL 15 s later;
    the exit code is then -1."""
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return proc.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        pass
    for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            stdout, stderr = proc.communicate(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            stdout, stderr = "", ""
    return -1, stdout or "", f"{stderr or ''}\ntimed out after {timeout:.0f} s"


def run_one(
    script: str, quick: bool, timeout: float, tree_python: str | None, label: str
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "SRIOVDP_BENCH_PYTHON"}
    if tree_python is not None:
        env["SRIOVDP_BENCH_PYTHON"] = tree_python
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        argv = [sys.executable, str(BENCH / script), "--json", str(out)]
        argv += QUICK.get(script, []) if quick else FULL.get(script, [])
        print(f"== {script} (Python {label}) {' '.join(argv[4:])}", flush=True)
        t0 = time.monotonic()
        rc, stdout, stderr = run_bounded(argv, env, timeout)
        elapsed = time.monotonic() - t0
        print(stdout, end="", flush=True)
        if stderr.strip():
            print("\n".join(stderr.strip().splitlines()[-5:]), flush=True)
        entry: dict[str, Any] = {
            "exit_code": rc,
            "seconds": round(elapsed, 1),
            "tree_python": tree_python or "checkout, this interpreter",
        }
        if out.exists():
            entry["data"] = json.loads(out.read_text())
        else:
            entry["skipped"] = (stderr.strip() or stdout.strip()).splitlines()[-1:] or ["no output"]
        return entry


# -- the summary -----------------------------------------------------------------------------------


def _not_measured(entry: dict[str, Any]) -> str:
    why = " ".join(entry.get("skipped", [])).replace("|", "/")
    return f"not measured (exit {entry['exit_code']}): {why}"


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, value, target, verdict) for the table, in :data:`TARGETS` order."""
    rows: list[tuple[str, str, str, str]] = []
    benchmarks = results["benchmarks"]
    for t in TARGETS:
        for label, entry in benchmarks.get(t.script, {}).items():
            metric = f"{t.metric} (Python {label})"
            reported = t.only not in (None, label)  # the target is for another version
            target = f"{t.target} on {t.only}: reported" if reported else t.target
            if "data" not in entry:
                rows.append((metric, _not_measured(entry), target, "not measured"))
                continue
            try:
                value, met = t.measure(entry["data"])
            except (KeyError, TypeError, ValueError, StopIteration, IndexError) as exc:
                rows.append((metric, f"results not understood: {exc!r}", target, "not measured"))
                continue
            verdict = "-" if reported else ("yes" if met else "**no**")
            rows.append((metric, value, target, verdict))
    for script, extract in REPORTED.items():
        for label, entry in benchmarks.get(script, {}).items():
            where = "" if script in PER_VERSION else ", from the checkout"
            if "data" not in entry:
                rows.append((f"{script} (Python {label}{where})", _not_measured(entry), "-", "-"))
                continue
            try:
                pairs = extract(entry["data"])
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                pairs = [(script, f"results not understood: {exc!r}")]
            rows.extend((f"{m} (Python {label}{where})", v, "-", "-") for m, v in pairs)
    return rows


def _where(path: str) -> str:
    try:
        return str(Path(path).relative_to(REPO))
    except ValueError:
        return path


def summary(results: dict[str, Any]) -> str:
    m = results["machine"]
    trees = ", ".join(
        f"{p['version']} (`{_where(p['path'])}`)" for p in results["pythons"].values()
    )
    lines = [
        START,
        "## Summary",
        "",
        f"Generated by `make bench` (`bench/run_all.py`) on {m['date']}: {m['cpu']}, {m['cores']} "
        f"cores, {m['memory_gb']} GB, Linux {m['kernel']}"
        f"{'' if m['root'] else ', not root'}{', quick settings' if results['quick'] else ''}. "
        f"Supervisor trees and plugin workers on Python {trees}, one after the other in the same "
        f"run; the benchmark processes (kubelet stand-in, clients) and bench_link_health's tree "
        f"(from the checkout) on Python {m['python']}. Raw numbers: `bench/results.json`. One "
        "run on a machine shared with other work: treat latency tails as noisy.",
        "",
        "| metric | value | target | met? |",
        "|---|---|---|---|",
    ]
    for metric, value, target, verdict in summary_rows(results):
        lines.append(f"| {metric} | {value} | {target} | {verdict} |")
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
    parser.add_argument(
        "--tree-python",
        action="append",
        help="an interpreter the measured trees run on, labelled by its version (repeatable; "
        "default: $SRIOVDP_BENCH_PYTHON or this one)",
    )
    args = parser.parse_args(argv)
    paths = args.tree_python or [os.environ.get("SRIOVDP_BENCH_PYTHON") or sys.executable]
    pythons = tree_pythons(paths)
    here = ".".join(platform.python_version().split(".")[:2])
    scripts = args.only or ORDER
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "pythons": pythons,
        "benchmarks": {},
    }
    t0 = time.monotonic()
    for script in scripts:
        if script in PER_VERSION:
            results["benchmarks"][script] = {
                label: run_one(script, args.quick, args.timeout, p["path"], label)
                for label, p in pythons.items()
            }
        else:
            results["benchmarks"][script] = {
                here: run_one(script, args.quick, args.timeout, None, here)
            }
    results["seconds"] = round(time.monotonic() - t0)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    block = summary(results)
    update_markdown(args.markdown, block)
    print(block)
    print(f"all benchmarks: {results['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
