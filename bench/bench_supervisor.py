"""Supervisor benchmark (runs the CLI, a kubelet stand-in and the real supervisor tree).

For a scaled simulated node (default 8 PFs x 64 VFs, one pool per PF), per spawn mode:

- ``registered_s``: from starting ``sriov-supervisor run`` to every pool registered with the
  kubelet stand-in and advertising all its devices;
- ``pss_mb``: memory of the whole process tree, the sum of ``Pss`` from
  ``/proc/<pid>/smaps_rollup`` over the supervisor and all its descendants;
- ``idle_cpu_ms``: CPU time of every thread of the tree (``/proc/<pid>/task/*/schedstat``, in
  nanoseconds: ``stat``'s 10 ms ticks are too coarse for a 20 ms target) over an idle window
  (10 s) that starts 2 s after every child is RUNNING;
- ``stop_s``: SIGTERM to exit 0.

Targets: registered < 1 s, PSS < 100 MB, idle CPU < 20 ms per 10 s. Prints a table;
``--json PATH`` writes the results.

The tree runs on the interpreter in ``$SRIOVDP_BENCH_PYTHON`` (default: this one). ``make bench``
points it at ``.venv-image``, where the package is installed as ``images/Dockerfile`` installs
it: from a wheel, without setuptools. A development venv's editable install adds a ``.pth``
import hook and setuptools' distutils shim to every interpreter's start, about 2 MB of private
memory in each exec'd process (the supervisor and the zygote) that no node ever runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sriovdp.simnode import scale_node
from sriovdp.simnode.kubelet import KubeletStandIn
from sriovdp.supervisor.client import ControlClient

TARGETS = {"registered_s": 1.0, "pss_mb": 100.0, "idle_cpu_ms": 20.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(") ", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rollup_kb(pid: int, field: str = "Pss") -> int:
    """One field of ``/proc/<pid>/smaps_rollup`` in kB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of ``pid`` (run time from schedstat, ns)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


#: ``comm`` prefix of each infrastructure child (the zygote names its forks ``sdp-<name>``)
_ROLE_COMMS = {
    "sdp-zygote": "zygote",
    "sdp-health-moni": "health-monitor",
    "sdp-kubelet-wat": "kubelet-watcher",
}


def role_of(pid: int, root: int, name: str) -> str:
    """``supervisor``, ``zygote``, ``health-monitor``, ``kubelet-watcher`` or ``plugin``."""
    if pid == root:
        return "supervisor"
    return _ROLE_COMMS.get(name, "plugin")


def config_for(pfs: int) -> dict[str, Any]:
    return {
        "resourceList": [
            {"resourceName": f"pool{p}", "selectors": {"pfNames": [f"scl{p}"]}} for p in range(pfs)
        ]
    }


def tree_python() -> str:
    """The interpreter the measured tree runs on (see the module docstring)."""
    return os.environ.get("SRIOVDP_BENCH_PYTHON") or sys.executable


def install_kind(python: str) -> str:
    """``editable`` when ``python`` runs the package through an editable install's import hook,
    else ``wheel``: which of the two a measurement was taken on."""
    probe = (
        "import glob, site; "
        "print(any(glob.glob(d + '/__editable__*.pth') for d in site.getsitepackages()))"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return "editable" if out.stdout.strip() == "True" else "wheel"


def scaled_node(prefix: str, mode: str, pfs: int, vfs: int) -> tuple[Path, list[str]]:
    """A simulated node of ``pfs`` PFs x ``vfs`` VFs (one pool per PF) in a new temp dir, and the
    ``sriov-supervisor run`` command line for it; returns (the dir, argv). Run it with the temp
    dir as working directory, so that ``-m sriovdp`` finds the installed package, not a checkout
    in the current directory."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    scale_node(base / "sys", pfs, vfs)
    (base / "proc" / "net").mkdir(parents=True)
    (base / "plugins").mkdir()
    (base / "config.json").write_text(json.dumps(config_for(pfs)))
    argv = [tree_python(), "-m", "sriovdp", "run", "--config-file", str(base / "config.json")]
    argv += ["--sysfs-root", str(base / "sys"), "--plugin-dir", str(base / "plugins")]
    argv += ["--run-dir", str(base / "run"), "--proc-root", str(base / "proc")]
    argv += ["--devinfo-dir", str(base / "devinfo"), "--cdi-dir", str(base / "cdi")]
    argv += ["--spawn-mode", mode, "--log-level", "warning"]
    return base, argv


def run_one(mode: str, pfs: int, vfs: int, idle_s: float) -> dict[str, Any]:
    base, argv = scaled_node(f"bench-sup-{mode}-", mode, pfs, vfs)
    kubelet = KubeletStandIn(base / "plugins")
    log = (base / "supervisor.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=base)
    try:

        def registered(k: KubeletStandIn) -> bool:
            alloc = k.allocatable()
            return len(alloc) == pfs and all(v == vfs for v in alloc.values())

        if not kubelet.wait_for(registered, 60):
            raise RuntimeError(f"{mode}: pools never registered: {kubelet.allocatable()}")
        registered_s = time.monotonic() - started
        with ControlClient(base / "run") as client:
            while not all(r["state"] == "RUNNING" for r in client.request("status")["children"]):
                time.sleep(0.05)
        time.sleep(2.0)  # let start-up work settle before measuring idle
        tree = descendants(proc.pid)
        per_process = {p: (comm(p), rollup_kb(p) / 1024) for p in tree}
        pss = sum(mb for _, mb in per_process.values())
        before = {p: cpu_ns(p) for p in tree}
        ticks_before = sum(cpu_ticks(p) for p in tree)
        time.sleep(idle_s)
        after = {p: cpu_ns(p) for p in descendants(proc.pid)}
        ticks_after = sum(cpu_ticks(p) for p in descendants(proc.pid))
        scale = 10.0 / idle_s
        cpu_ms = {p: (after.get(p, 0) - before.get(p, 0)) / 1e6 * scale for p in tree}
        idle_ms = sum(cpu_ms.values())
        idle_ticks_ms = (ticks_after - ticks_before) * 1000 / CLK_TCK * scale
        stop_started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        stop_s = time.monotonic() - stop_started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kubelet.stop()
        log.close()
    return {
        "mode": mode,
        "pools": pfs,
        "vfs_per_pool": vfs,
        "processes": len(tree),
        "registered_s": round(registered_s, 3),
        "pss_mb": round(pss, 1),
        "pss_per_process_mb": round(pss / len(tree), 1),
        "idle_cpu_ms": round(idle_ms, 1),
        "idle_cpu_ms_from_ticks": round(idle_ticks_ms, 1),
        "per_process": [
            {
                "comm": name,
                "role": role_of(p, proc.pid, name),
                "pss_mb": round(mb, 1),
                "idle_cpu_ms": round(cpu_ms[p], 2),
            }
            for p, (name, mb) in per_process.items()
        ],
        "stop_s": round(stop_s, 3),
        "exit_code": rc,
    }


def pss_by_role(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median PSS per role over every run (per process: a plugin worker's is one worker's)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for process in run["per_process"]:
            values.setdefault(process["role"], []).append(process["pss_mb"])
    return {role: round(statistics.median(v), 1) for role, v in sorted(values.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=8)
    parser.add_argument("--vfs", type=int, default=64)
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds")
    parser.add_argument("--modes", default="zygote,exec")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; medians shown")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    runs = [
        run_one(m, args.pools, args.vfs, args.idle)
        for m in args.modes.split(",")
        for _ in range(args.repeat)
    ]
    results = []
    for m in args.modes.split(","):
        mine = [r for r in runs if r["mode"] == m]
        row = dict(mine[0])
        for key in ("registered_s", "pss_mb", "pss_per_process_mb", "idle_cpu_ms", "stop_s"):
            row[key] = statistics.median(r[key] for r in mine)
        row["pss_by_role_mb"] = pss_by_role(mine)
        row["runs"] = mine
        results.append(row)
    cols: tuple[str, ...] = ("mode", "processes", "registered_s", "pss_mb", "pss_per_process_mb")
    cols += ("idle_cpu_ms", "stop_s", "exit_code")
    python = tree_python()
    install = install_kind(python)
    print(f"{args.pools} pools x {args.vfs} VFs, median of {args.repeat}; targets: {TARGETS}")
    print(f"tree interpreter: {python} ({install} install)")
    print("  ".join(f"{c:>18}" for c in cols))
    for r in results:
        print("  ".join(f"{r[c]!s:>18}" for c in cols))
    for r in results:
        roles = ", ".join(f"{role} {mb}" for role, mb in r["pss_by_role_mb"].items())
        print(f"{r['mode']}: median PSS per process (MB; plugin = one worker): {roles}")
    if args.json:
        report = {"targets": TARGETS, "python": python, "install": install, "results": results}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
