"""conf/supervisord.conf under a real supervisord: the plugin runs, registers every pool with the
kubelet stand-in, and ``supervisorctl stop`` leaves no process, socket or device-info file behind.

The config under test is derived from conf/supervisord.conf itself: every absolute path in it is
moved under a temp root (``/var/log/x`` -> ``<root>/var/log/x``), the program's executable is taken
from this virtualenv, and the test fails if a path escapes the relocation. Nothing else changes, so
a broken conf/supervisord.conf breaks this test.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sriovdp.simnode import demo_config, demo_node
from sriovdp.simnode.kubelet import KubeletStandIn, unix_sockets

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "supervisord.conf"
VENV_BIN = Path(sys.executable).parent
SUPERVISORD = VENV_BIN / "supervisord"
SUPERVISORCTL = VENV_BIN / "supervisorctl"
PROGRAM = "sriov-dp"


@dataclass(frozen=True)
class Node:
    """The relocated config and the paths it points at."""

    root: Path
    conf: Path
    env: dict[str, str]  # the program's environment, relocated

    def path(self, name: str) -> Path:
        return Path(self.env[name])


def relocate(value: str, root: Path) -> str:
    """``/a/b`` -> ``<root>/a/b``; ``/`` stays (a working directory)."""
    if value == "/" or not value.startswith("/"):
        return value
    return str(root / value.lstrip("/"))


def parse_environment(text: str) -> dict[str, str]:
    from supervisor.datatypes import dict_of_key_value_pairs

    parsed: dict[str, str] = dict_of_key_value_pairs(text)
    return parsed


def derive_config(root: Path) -> Node:
    """A copy of conf/supervisord.conf with every path under ``root``."""
    parser = configparser.RawConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(CONF.read_text())
    program = parser[f"program:{PROGRAM}"]
    env: dict[str, str] = {}
    for section in parser.sections():
        for key, value in parser[section].items():
            if section == f"program:{PROGRAM}" and key == "command":
                executable, *args = value.split()
                local = VENV_BIN / Path(executable).name
                assert local.exists(), f"{executable}: no {local.name} in this virtualenv"
                parser[section][key] = " ".join([str(local), *args])
            elif section == f"program:{PROGRAM}" and key == "environment":
                env = {k: relocate(v, root) for k, v in parse_environment(value).items()}
                parser[section][key] = ",".join(f'{k}="{v}"' for k, v in env.items())
            elif key == "serverurl" and value.startswith("unix://"):
                parser[section][key] = "unix://" + relocate(value[len("unix://") :], root)
            else:
                parser[section][key] = relocate(value, root)
    if os.geteuid() != 0:  # an unprivileged test run cannot switch or chown to root
        program.pop("user", None)
        parser["unix_http_server"].pop("chown", None)
    for section in parser.sections():
        for key, value in parser[section].items():
            words = value.replace("unix://", " ").replace("=", " ").replace('"', " ")
            for word in words.replace(",", " ").split():
                inside = word == "/" or any(
                    word.startswith(str(p)) for p in (root, VENV_BIN, Path(sys.executable))
                )
                assert not word.startswith("/") or inside, f"[{section}] {key}: {word} escapes"
    conf = root / "supervisord.conf"
    with conf.open("w") as handle:
        parser.write(handle)
    return Node(root=root, conf=conf, env=env)


@pytest.fixture
def node() -> Iterator[Node]:
    # short: unix socket paths (kubelet dir, run dir) must stay under 108 bytes
    root = Path(tempfile.mkdtemp(prefix="sdv", dir="/tmp"))
    try:
        yield derive_config(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def prepare_node(node: Node) -> None:
    """Directories supervisord expects to exist, a simulated node, the demo config."""
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read(node.conf)
    for section, key in (
        ("supervisord", "logfile"),
        ("supervisord", "pidfile"),
        ("unix_http_server", "file"),
        (f"program:{PROGRAM}", "stdout_logfile"),
    ):
        Path(parser[section][key]).parent.mkdir(parents=True, exist_ok=True)
    Path(parser["supervisord"]["childlogdir"]).mkdir(parents=True, exist_ok=True)
    demo_node(node.path("SRIOV_DP_SYSFS_ROOT"))
    proc_net = node.path("SRIOV_DP_PROC_ROOT") / "net"
    proc_net.mkdir(parents=True)
    (proc_net / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    )
    config = node.path("SRIOV_DP_CONFIG_FILE")
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(demo_config()))
    for name in ("SRIOV_DP_DEVINFO_DIR", "SRIOV_DP_CDI_DIR"):
        node.path(name).mkdir(parents=True)


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SRIOV_DP_", "SUPERVISOR_", "PYTEST_"))
    }


def ctl(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SUPERVISORCTL), "-c", str(node.conf), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo.extend(children.get(current, []))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sockets_in(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return [p for p in directory.rglob("*") if stat.S_ISSOCK(p.lstat().st_mode)]


@pytest.mark.skipif(not SUPERVISORD.exists(), reason="supervisord is not installed in the venv")
def test_supervisord_runs_registers_and_stops_clean(node: Node) -> None:
    prepare_node(node)
    plugin_dir = node.path("SRIOV_DP_PLUGIN_DIR")
    devinfo_dir = node.path("SRIOV_DP_DEVINFO_DIR")
    run_dir = node.path("SRIOV_DP_RUN_DIR")
    expected = {
        f"{entry.get('resourcePrefix', 'intel.com')}/{entry['resourceName']}"
        for entry in demo_config()["resourceList"]
    }
    kubelet = KubeletStandIn(plugin_dir)
    daemon = subprocess.Popen(
        [str(SUPERVISORD), "-n", "-c", str(node.conf)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tree: set[int] = set()
    try:
        # RUNNING in supervisord's eyes: up for startsecs without exiting
        program_log = Path(configparser_value(node.conf, f"program:{PROGRAM}", "stdout_logfile"))
        wait(
            lambda: ctl(node, "status", PROGRAM).stdout.split()[1:2] == ["RUNNING"],
            120,
            f"supervisorctl status {PROGRAM} RUNNING; its log:\n"
            + (program_log.read_text()[-3000:] if program_log.exists() else "(none)"),
        )
        assert ctl(node, "status").returncode == 0
        # registered, each with its first list
        assert kubelet.wait_for(
            lambda k: all(k.connected(r) and k.devices(r) for r in expected), 120
        ), f"registered: {[r.resource for r in kubelet.registrations]}, expected {expected}"
        # the supervisor's own view agrees: every child RUNNING (exit 0)
        status = subprocess.run(
            [str(VENV_BIN / "sriov-supervisor"), "status", "--run-dir", str(run_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=clean_env(),
        )
        assert status.returncode == 0, status.stdout + status.stderr

        # one allocation: a pod holds the device, so its device-info file outlives the stop
        resource = "intel.com/sriov_net_A"
        device = kubelet.devices(resource)[0].id
        kubelet.allocate(resource, [device])
        written = sorted(p.name for p in devinfo_dir.iterdir())
        assert written, "Allocate wrote no device-info file"

        pid = int(ctl(node, "pid", PROGRAM).stdout.strip())
        tree = descendants(pid)
        assert len(tree) > len(expected), f"expected a worker per pool below {pid}: {tree}"
        assert [p for p in unix_sockets(plugin_dir) if p.name != "kubelet.sock"]

        stop = ctl(node, "stop", PROGRAM)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert f"{PROGRAM}: stopped" in stop.stdout
        assert ctl(node, "status", PROGRAM).stdout.split()[1] == "STOPPED"

        wait(lambda: not any(alive(p) for p in tree), 10, "every process of the tree to end")
        leftovers = [p.name for p in unix_sockets(plugin_dir) if p.name != "kubelet.sock"]
        assert not leftovers, f"plugin sockets left in the kubelet dir: {leftovers}"
        assert not sockets_in(run_dir), f"sockets left in the run dir: {sockets_in(run_dir)}"
        kept = sorted(p.name for p in devinfo_dir.iterdir())
        assert kept == written, "the device-info file of a device a pod holds was removed"
        assert not list(node.path("SRIOV_DP_CDI_DIR").iterdir()), "CDI specs left behind"
        # the program's log went where conf/supervisord.conf says, and rotation is configured
        logfile = Path(configparser_value(node.conf, f"program:{PROGRAM}", "stdout_logfile"))
        assert logfile.exists() and logfile.stat().st_size > 0
        daemon_log = Path(configparser_value(node.conf, "supervisord", "logfile"))
        assert " CRIT " not in daemon_log.read_text(), daemon_log.read_text()
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            ctl(node, "shutdown")
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        for pid in tree:  # only processes this test started
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        kubelet.stop()
    assert daemon.returncode == 0, daemon.stdout.read() if daemon.stdout else ""


def configparser_value(conf: Path, section: str, key: str) -> str:
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read(conf)
    return parser[section][key]


def test_program_stop_settings_match_the_supervisor() -> None:
    """TERM alone to the supervisor, KILL to the group only after its whole shutdown could end."""
    from supervisor.datatypes import RestartUnconditionally
    from supervisor.options import ServerOptions

    from sriovdp.supervisor.cli import command

    root = Path(tempfile.mkdtemp(prefix="sdc", dir="/tmp"))
    try:
        node = derive_config(root)
        prepare_node(node)
        options = ServerOptions()
        options.realize(args=["-c", str(node.conf)])
        (group,) = options.process_group_configs
        (program,) = group.process_configs
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert program.name == PROGRAM
    assert program.stopsignal == signal.SIGTERM
    assert program.stopasgroup is False and program.killasgroup is True
    assert program.autorestart is RestartUnconditionally
    assert program.startsecs > 0
    assert program.stdout_logfile_maxbytes > 0 and program.stdout_logfile_backups > 0
    (server,) = options.server_configs
    assert server["chmod"] == 0o700
    run = command("run")
    assert run is not None
    env = {k: v for k, v in program.environment.items() if k.startswith("SRIOV_DP_")}
    known = {str(p.envvar): p for p in run.params if p.envvar}
    assert set(env) <= set(known), set(env) - set(known)
    params = run.make_context("run", [], default_map=None).params  # defaults
    grace = float(env.get("SRIOV_DP_STOP_GRACE", params["stop_grace"]))
    # the supervisor's shutdown: per-child grace + its deadline slack + stopping its spawner
    assert program.stopwaitsecs > grace + 8
