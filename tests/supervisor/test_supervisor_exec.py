"""``sriov-supervisor run`` hands over to ``python -m sriovdp.supervisor`` (same pid, no click):
the options survive the trip, bad hand-overs are refused, and a real run is the exec'd process."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.supervisor.client import ControlClient
from sriovdp.supervisor.runopts import RunOptions, Timeouts, options_from_json, options_to_json

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def _opts(**changes: Any) -> RunOptions:
    base = RunOptions(
        config_file="/c.json",
        resource_prefix="x.io",
        plugin_dir="/p",
        sysfs_root="/s",
        proc_root="/proc",
        run_dir="/r",
        devinfo_dir="/d",
        cdi_dir="/cdi",
    )
    return dataclasses.replace(base, **changes)


def test_options_survive_the_json_hand_over() -> None:
    opts = _opts(
        use_cdi=True,
        log_level="debug",
        spawn_mode="exec",
        timeouts=Timeouts(heartbeat=4.5, start=7.0, stop_grace=0.5),
        backoff=BackoffPolicy(base=0.1, cap=3.0),
        child_entry="tests.supervisor.fakechild",
        infra=(),
    )
    assert options_from_json(options_to_json(opts)) == opts
    assert options_from_json(options_to_json(_opts())) == _opts()


@pytest.mark.parametrize(
    "text", ["", "[]", "{}", '{"config_file": "/c"}', json.dumps({"timeouts": 1}), "nul"]
)
def test_a_bad_hand_over_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        options_from_json(text)


@pytest.mark.parametrize("seam", ["--child-entry=tests.supervisor.fakechild", "--no-infra"])
def test_run_has_no_test_seams(tmp_path: Path, seam: str) -> None:
    """What children run is not an option of the shipped CLI (nor of its environment): tests
    start the supervisor's own entry with options they build."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"resourceList": []}))
    argv = [sys.executable, "-m", "sriovdp", "run", "--config-file", str(config), seam]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False, timeout=60)
    assert done.returncode == 2
    assert "No such option" in done.stderr
    assert "child-entry" not in run_help() and "infra" not in run_help()


def run_help() -> str:
    argv = [sys.executable, "-m", "sriovdp", "run", "--help"]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=True).stdout


def test_the_supervisor_entry_refuses_bad_arguments() -> None:
    for args in ([], ["--options"], ["--options", "{}"], ["--other", "x"]):
        done = subprocess.run(
            [sys.executable, "-m", "sriovdp.supervisor", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 1, args
        assert "sriovdp.supervisor" in done.stderr


def test_the_supervisor_process_never_imports_click() -> None:
    probe = "import sys, sriovdp.supervisor.__main__; print('click' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "False"


def test_run_becomes_the_supervisor_in_place(tmp_path: Path) -> None:
    """The pid the caller started (the container runtime, supervisord) is the supervisor's, and
    it is running ``python -m sriovdp.supervisor``, not the CLI."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"resourceList": [{"resourceName": "a", "selectors": {}}]}))
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "sriovdp", "run", "--config-file", str(config)]
    argv += ["--run-dir", str(run_dir), "--plugin-dir", str(tmp_path / "plugins")]
    (tmp_path / "sys").mkdir()
    argv += ["--sysfs-root", str(tmp_path / "sys"), "--no-metrics", "--log-level", "debug"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with ControlClient(run_dir, timeout=1.0) as client:
                    pid = client.request("ping")["pid"]
                break
            except Exception:
                assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                time.sleep(0.05)
        assert pid == proc.pid
        # the exec'd supervisor names itself (setproctitle): ps shows what it is, not its JSON
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0 ")
        assert cmdline == b"sriov-dp supervisor"
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "sdp-supervisor"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
