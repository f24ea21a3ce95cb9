"""Test and demo support stays out of the production path: no module that the supervisor, the
zygote or any worker runs imports the simulated node (``sriovdp.simnode``) or anything under
``tests`` (checked in a fresh interpreter that imports all of them, as the zygote's preload and
the supervisor do). Only ``sriov-supervisor demo`` (``sriovdp.supervisor.demo``) uses it."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import sriovdp

REPO = Path(__file__).resolve().parents[1]

#: the CLI's demo command builds a simulated node on purpose; nothing else may
DEMO_ONLY = {"sriovdp.supervisor.demo"}

PRODUCTION = sorted(
    info.name
    for info in pkgutil.walk_packages(sriovdp.__path__, "sriovdp.")
    if not info.name.startswith("sriovdp.simnode")
    and info.name not in DEMO_ONLY
    and not info.name.endswith("__main__")
)

_PROBE = """
import importlib, json, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
support = ("sriovdp.simnode", "tests")
print(json.dumps(sorted(m for m in sys.modules
                        if any(m == s or m.startswith(s + ".") for s in support))))
"""


def _loaded_support(modules: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(modules)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def test_production_modules_never_load_the_simulated_node() -> None:
    assert "sriovdp.launch.zygote" in PRODUCTION
    assert "sriovdp.workers.plugin.main" in PRODUCTION
    assert "sriovdp.supervisor.main" in PRODUCTION
    assert _loaded_support(PRODUCTION) == []


def test_the_check_can_fail() -> None:
    assert "sriovdp.simnode" in _loaded_support(["sriovdp.supervisor.demo", "sriovdp.simnode"])
