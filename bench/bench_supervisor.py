"""Supervisor tree benchmark (runs the CLI, a kubelet stand-in and the real supervisor tree).

For each simulated node in ``--trees`` (``PxV``: P PFs with V VFs each, one pool per PF; default
``4x16,4x64,8x64``), per spawn mode (default ``zygote``), ``--repeat`` times (default 3, the trees
taken in turn so that drift hits all of them alike; medians reported), after ``--warmup`` (1)
unmeasured run of the first tree:

- ``registered_s``: from starting ``sriov-supervisor run`` to every pool registered with the
  kubelet stand-in and advertising all its devices;
- ``pss_mb``: memory of the whole process tree, the sum of ``Pss`` from
  ``/proc/<pid>/smaps_rollup`` over the supervisor and all its descendants, 2 s after every child
  is RUNNING;
- ``idle_cpu_ms`` (only the trees in ``--idle-trees``, default ``8x64``): CPU time of every thread
  of the tree (``/proc/<pid>/task/*/schedstat``, in nanoseconds: ``stat``'s 10 ms ticks are too
  coarse for a 30 ms target) over an idle window (``--idle``, 10 s) right after the PSS reading,
  scaled to 10 s;
- ``stop_s``: SIGTERM to the supervisor's exit, with its exit code and ``left_running``, the
  processes of the tree still alive when it had exited;
- ``pss_slope``: between two trees with the same VFs per pool (4x64 -> 8x64), the PSS each added
  pool costs: (PSS of the bigger tree - PSS of the smaller) / (pools added), per repeat (the two
  runs back to back), median over the repeats.

Targets: registered <= 0.8 s (4x16) and <= 1.0 s (8x64), PSS <= 130 MB (8x64; the target is for
Python 3.11), PSS slope <= 12 MB per pool, idle CPU <= 30 ms per 10 s (8x64). Prints a table;
``--json PATH`` writes the results; ``--quick``: one run each, a 3 s idle window.

The tree runs on the interpreter in ``$SRIOVDP_BENCH_PYTHON`` (default: this one), and so do
those of the other scripts here, started through :class:`Tree` or :func:`start_tree`. ``make
bench`` points it at ``.venv-image/<X.Y>``, where the package is installed as
``images/Dockerfile`` installs it: from a wheel, without setuptools, one venv per Python version
measured. A development venv's
editable install adds a ``.pth`` import hook and setuptools' distutils shim to every
interpreter's start, about 2 MB of private memory in each exec'd process (the supervisor and the
zygote) that no node ever runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sriovdp.simnode import scale_node
from sriovdp.simnode.kubelet import KubeletStandIn, unix_sockets
from sriovdp.supervisor.client import ControlClient

#: tree -> target (``pss_mb``: on Python 3.11; reported for the others)
TARGETS: dict[str, Any] = {
    "registered_s": {"4x16": 0.8, "8x64": 1.0},
    "pss_mb": {"8x64": 130.0},
    "pss_slope_mb_per_pool": {"4x64->8x64": 12.0},
    "idle_cpu_ms": {"8x64": 30.0},
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE_S = 2.0


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


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


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


#: ``comm`` of each infrastructure child (``sriovdp.launch.runtime.name_process``)
_ROLE_COMMS = {
    "sdp-zygote": "zygote",
    "sdp-healthmon": "health-monitor",
    "sdp-kubewatch": "kubelet-watcher",
    "sdp-metrics": "metrics",
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


def python_version(python: str) -> str:
    """``X.Y.Z`` of ``python``."""
    probe = "import platform; print(platform.python_version())"
    return subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()


def install_kind(python: str) -> str:
    """``editable`` when ``python`` runs the package through an editable install's import hook,
    else ``wheel``: which of the two a measurement was taken on."""
    probe = (
        "import glob, site; "
        "print(any(glob.glob(d + '/__editable__*.pth') for d in site.getsitepackages()))"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return "editable" if out.stdout.strip() == "True" else "wheel"


def tree_info() -> dict[str, str]:
    """What every script's JSON says about the tree it measured."""
    python = tree_python()
    return {
        "tree_python": python,
        "tree_python_version": python_version(python),
        "install": install_kind(python),
    }


def start_tree(node: Any) -> None:
    """``SimNode.start_supervisor()`` (tests/integration/conftest.py, no netns), but on
    :func:`tree_python` as installed there: run from the node's temp dir, no ``PYTHONPATH``, so
    ``-m sriovdp`` imports the installed package, not the checkout. Sets ``node.proc``, so
    ``node.close()`` and everything else of the SimNode work as usual."""
    argv = [tree_python(), "-m", "sriovdp", "run", "--config-file", str(node.config)]
    argv += ["--run-dir", str(node.run_dir), "--plugin-dir", str(node.plugin_dir)]
    argv += ["--sysfs-root", str(node.base / "sys"), "--proc-root", str(node.base / "proc")]
    argv += ["--devinfo-dir", str(node.base / "devinfo"), "--cdi-dir", str(node.base / "cdi")]
    argv += ["--spawn-mode", node.spawn_mode]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with node.log.open("ab") as log:
        node.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=node.base)


def sigterm_to_exit(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> dict[str, Any]:
    """SIGTERM to the supervisor ``proc``, timed until it exited: ``stop_s``, ``exit_code`` and
    ``left_running`` (processes of its tree, as seen just before, still alive at its exit)."""
    tree = [p for p in descendants(proc.pid) if p != proc.pid]
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout)
    stop_s = time.monotonic() - started
    return {
        "stop_s": round(stop_s, 3),
        "exit_code": rc,
        "left_running": sum(1 for p in tree if alive(p)),
    }


def node_dir(prefix: str) -> Path:
    """A new temp dir for a simulated node: on tmpfs (``/dev/shm``) when there is one, as the
    real sysfs is in memory too (and building 4096 fake VFs on this machine's disk takes a
    minute, on tmpfs 5 s); else in ``$TMPDIR``. Short: unix socket paths stay under 107 bytes."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


def expected_counts(config: dict[str, Any], vfs: int) -> dict[str, int]:
    """Resource -> devices of a ``config_for`` config."""
    return {f"intel.com/{r['resourceName']}": vfs for r in config["resourceList"]}


class Tree:
    """A simulated node of ``pfs`` PFs x ``vfs`` VFs (:func:`node_dir`; one pool per PF unless
    ``config`` says otherwise), a kubelet stand-in on its plugin dir and, from :meth:`start` on,
    ``sriov-supervisor run`` on :func:`tree_python` (from the temp dir, without ``PYTHONPATH``,
    so that ``-m sriovdp`` finds the installed package, not a checkout). :meth:`close` stops
    whatever still runs and removes the dir."""

    def __init__(
        self,
        pfs: int,
        vfs: int,
        mode: str = "zygote",
        config: dict[str, Any] | None = None,
        log_level: str | None = "warning",
    ) -> None:
        self.pfs, self.vfs, self.mode = pfs, vfs, mode
        self.log_level = log_level
        self.base = node_dir("sdpb-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.kubelet: KubeletStandIn | None = None
        try:
            scale_node(self.base / "sys", pfs, vfs)
            (self.base / "proc" / "net").mkdir(parents=True)
            (self.base / "plugins").mkdir()
            self.configure(config or config_for(pfs))
            self.kubelet = KubeletStandIn(self.base / "plugins")
        except BaseException:
            self.close()
            raise

    def configure(self, config: dict[str, Any]) -> None:
        """Writes the config file (read by the next :meth:`start`)."""
        (self.base / "config.json").write_text(json.dumps(config))

    @property
    def stand_in(self) -> KubeletStandIn:
        assert self.kubelet is not None
        return self.kubelet

    def argv(self) -> list[str]:
        base = self.base
        argv = [tree_python(), "-m", "sriovdp", "run", "--config-file", str(base / "config.json")]
        argv += ["--sysfs-root", str(base / "sys"), "--plugin-dir", str(base / "plugins")]
        argv += ["--run-dir", str(base / "run"), "--proc-root", str(base / "proc")]
        argv += ["--devinfo-dir", str(base / "devinfo"), "--cdi-dir", str(base / "cdi")]
        argv += ["--spawn-mode", self.mode]
        if self.log_level is not None:
            argv += ["--log-level", self.log_level]
        return argv

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        with (self.base / "supervisor.log").open("ab") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=log, cwd=self.base, env=env
            )

    def fresh_stand_in(self) -> KubeletStandIn:
        """A new kubelet stand-in, as after a kubelet restart (every unix socket in the plugin
        dir deleted first): for the next :meth:`start` of the same node."""
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        for path in unix_sockets(self.base / "plugins"):
            path.unlink(missing_ok=True)
        self.kubelet = KubeletStandIn(self.base / "plugins")
        return self.kubelet

    def log_text(self) -> str:
        try:
            return (self.base / "supervisor.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_registered(self, expected: dict[str, int], timeout: float = 60.0) -> float:
        """Seconds from :meth:`start` until every resource in ``expected`` (name -> devices) is
        registered and advertises that many healthy devices, and no other is."""

        def registered(k: KubeletStandIn) -> bool:
            return k.allocatable() == expected

        if not self.stand_in.wait_for(registered, timeout):
            raise RuntimeError(
                f"{self.pfs}x{self.vfs}: pools never registered: "
                f"{self.stand_in.allocatable()}\n{self.log_text()}"
            )
        return time.monotonic() - self.started

    def wait_running(self, timeout: float = 30.0) -> None:
        """Until the supervisor reports every child RUNNING."""
        deadline = time.monotonic() + timeout
        with ControlClient(self.base / "run") as client:
            while not all(r["state"] == "RUNNING" for r in client.request("status")["children"]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"children never all RUNNING:\n{self.log_text()}")
                time.sleep(0.05)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.kubelet is not None:
            self.kubelet.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def run_one(mode: str, pfs: int, vfs: int, idle_s: float) -> dict[str, Any]:
    """One tree: started, registered, PSS, idle CPU (``idle_s`` > 0), SIGTERM."""
    tree = Tree(pfs, vfs, mode)
    try:
        tree.start()
        assert tree.proc is not None
        registered_s = tree.wait_registered(expected_counts(config_for(pfs), vfs))
        tree.wait_running()
        time.sleep(SETTLE_S)  # let start-up work settle before measuring memory and idle
        root = tree.proc.pid
        pids = descendants(root)
        per_process = {p: (comm(p), rollup_kb(p) / 1024) for p in pids}
        pss = sum(mb for _, mb in per_process.values())
        cpu_ms: dict[int, float] = {}
        idle: dict[str, Any] = {}
        if idle_s > 0:
            before = {p: cpu_ns(p) for p in pids}
            ticks_before = sum(cpu_ticks(p) for p in pids)
            time.sleep(idle_s)
            now = descendants(root)
            after = {p: cpu_ns(p) for p in now}
            ticks_after = sum(cpu_ticks(p) for p in now)
            scale = 10.0 / idle_s
            cpu_ms = {p: (after.get(p, 0) - before.get(p, 0)) / 1e6 * scale for p in pids}
            idle = {
                "idle_s": idle_s,
                "idle_cpu_ms": round(sum(cpu_ms.values()), 1),
                "idle_cpu_ms_from_ticks": round(
                    (ticks_after - ticks_before) * 1000 / CLK_TCK * scale, 1
                ),
            }
        stop = sigterm_to_exit(tree.proc)
    finally:
        tree.close()
    return {
        "tree": f"{pfs}x{vfs}",
        "mode": mode,
        "pools": pfs,
        "vfs_per_pool": vfs,
        "processes": len(pids),
        "registered_s": round(registered_s, 3),
        "pss_mb": round(pss, 1),
        "pss_per_process_mb": round(pss / len(pids), 1),
        **idle,
        "per_process": [
            {
                "comm": name,
                "role": role_of(p, root, name),
                "pss_mb": round(mb, 1),
                **({"idle_cpu_ms": round(cpu_ms[p], 2)} if cpu_ms else {}),
            }
            for p, (name, mb) in per_process.items()
        ],
        **stop,
    }


def pss_by_role(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median PSS per role over every run (per process: a plugin worker's is one worker's)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for process in run["per_process"]:
            values.setdefault(process["role"], []).append(process["pss_mb"])
    return {role: round(statistics.median(v), 1) for role, v in sorted(values.items())}


def parse_tree(spec: str) -> tuple[int, int]:
    pools, _, vfs = spec.strip().partition("x")
    return int(pools), int(vfs)


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per tree and mode: the first run's fields, medians of the numbers over all runs."""
    row = dict(runs[0])
    row.pop("per_process")
    for key in ("registered_s", "pss_mb", "pss_per_process_mb", "idle_cpu_ms", "stop_s"):
        if key in row:
            row[key] = round(statistics.median(r[key] for r in runs), 3)
    row["stop_s_max"] = max(r["stop_s"] for r in runs)
    row["exit_codes"] = [r["exit_code"] for r in runs]
    row["exit_code"] = next((c for c in row["exit_codes"] if c != 0), 0)
    row["left_running"] = max(r["left_running"] for r in runs)
    row["pss_by_role_mb"] = pss_by_role(runs)
    row["repeat"] = len(runs)
    row["runs"] = runs
    return row


def slopes(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PSS per added pool between consecutive trees (by pools) with the same VFs per pool: the
    median over the repeats of each repeat's difference."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in results):
        for vfs in dict.fromkeys(r["vfs_per_pool"] for r in results if r["mode"] == mode):
            same = sorted(
                (r for r in results if r["mode"] == mode and r["vfs_per_pool"] == vfs),
                key=lambda r: r["pools"],
            )
            for small, big in itertools.pairwise(same):
                added = big["pools"] - small["pools"]
                if added <= 0:
                    continue
                per_repeat = [
                    round((b["pss_mb"] - a["pss_mb"]) / added, 2)
                    for a, b in zip(small["runs"], big["runs"], strict=True)
                ]
                out.append(
                    {
                        "mode": mode,
                        "from": small["tree"],
                        "to": big["tree"],
                        "mb_per_pool": round(statistics.median(per_repeat), 2),
                        "per_repeat": per_repeat,
                    }
                )
    return out


def verdicts(results: list[dict[str, Any]], slope: list[dict[str, Any]], version: str) -> list[str]:
    lines = []
    for r in results:
        for key in ("registered_s", "pss_mb", "idle_cpu_ms"):
            target = TARGETS[key].get(r["tree"])
            if target is not None and key in r:
                ok = "met" if r[key] <= target else "MISSED"
                if key == "pss_mb" and not version.startswith("3.11."):
                    ok += " (the target is for Python 3.11)"
                lines.append(f"  {r['mode']} {r['tree']}: {key} {r[key]} <= {target}: {ok}")
    for s in slope:
        target = TARGETS["pss_slope_mb_per_pool"].get(f"{s['from']}->{s['to']}")
        if target is not None:
            ok = "met" if s["mb_per_pool"] <= target else "MISSED"
            lines.append(
                f"  {s['mode']} PSS per added pool {s['from']} -> {s['to']}: "
                f"{s['mb_per_pool']} MB <= {target}: {ok}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="4x16,4x64,8x64", help="PFs x VFs each, comma-separated")
    parser.add_argument("--pools", type=int, help="with --vfs: one tree of this size instead")
    parser.add_argument("--vfs", type=int, default=64)
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds")
    parser.add_argument("--idle-trees", default="8x64", help="trees whose idle CPU is measured")
    parser.add_argument("--modes", default="zygote", help="spawn modes (zygote, exec)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tree and mode; medians")
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured runs of the first tree before the others"
    )
    parser.add_argument("--quick", action="store_true", help="one run each, a 3 s idle window")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    trees = (
        [(args.pools, args.vfs)] if args.pools else [parse_tree(t) for t in args.trees.split(",")]
    )
    idle_trees = {parse_tree(t) for t in args.idle_trees.split(",") if t.strip()}
    if args.pools:
        idle_trees = set(trees)
    repeat, idle_s = (1, min(args.idle, 3.0)) if args.quick else (args.repeat, args.idle)
    modes = args.modes.split(",")
    for _ in range(args.warmup):  # page cache, bytecode: the first start after an install is slower
        run_one(modes[0], trees[0][0], trees[0][1], 0.0)
    runs = [
        run_one(m, pfs, vfs, idle_s if (pfs, vfs) in idle_trees else 0.0)
        for _ in range(repeat)
        for pfs, vfs in trees
        for m in modes
    ]
    results = [
        medians([r for r in runs if r["mode"] == m and r["tree"] == f"{pfs}x{vfs}"])
        for pfs, vfs in trees
        for m in modes
    ]
    slope = slopes(results)
    info = tree_info()
    cols: tuple[str, ...] = ("tree", "mode", "processes", "registered_s", "pss_mb")
    cols += ("pss_per_process_mb",)
    cols += ("idle_cpu_ms", "stop_s", "exit_code", "left_running")
    print(f"median of {repeat} runs per tree; idle window {idle_s:g} s")
    print(
        f"tree interpreter: {info['tree_python']} (Python {info['tree_python_version']}, "
        f"{info['install']} install)"
    )
    print("  ".join(f"{c:>18}" for c in cols))
    for r in results:
        print("  ".join(f"{r.get(c, '-')!s:>18}" for c in cols))
    for r in results:
        roles = ", ".join(f"{role} {mb}" for role, mb in r["pss_by_role_mb"].items())
        print(f"{r['mode']} {r['tree']}: median PSS per process (MB; plugin = one worker): {roles}")
    for s in slope:
        print(f"{s['mode']}: PSS per added pool, {s['from']} -> {s['to']}: {s['mb_per_pool']} MB")
    print("targets:")
    print("\n".join(verdicts(results, slope, info["tree_python_version"])))
    if args.json:
        report = {"targets": TARGETS, **info, "results": results, "pss_slope": slope}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
