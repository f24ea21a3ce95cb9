"""``sriov-supervisor demo`` (the README's ``make demo``) end to end: a real supervisor on a
simulated node, the kubelet stand-in, one allocation, status, a clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_allocates_and_stops_clean() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "sriovdp", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=150,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    allocatable = json.loads(text.split("jq .status.allocatable\n", 1)[1].split("}", 1)[0] + "}")
    assert allocatable == {
        "intel.com/sriov_net_A": "8",
        "intel.com/sriov_uio": "4",
        "intel.com/sriov_vfio": "4",
    }
    assert '"PCIDEVICE_INTEL_COM_SRIOV_VFIO": "0000:04:00.4"' in text
    assert '"container_path": "/dev/vfio/vfio"' in text
    status = text.split("$ sriov-supervisor status\n", 1)[1]
    for pool in ("intel-com_sriov_net_A", "intel-com_sriov_vfio", "intel-com_sriov_uio"):
        line = next(row for row in status.splitlines() if row.startswith(pool))
        assert " RUNNING " in line and " yes " in line, line
    assert "SIGTERM -> supervisor exited 0" in text
    assert "plugin sockets left behind: none" in text
