"""Test and demo support stays out of the production path: no module that the supervisor, the
zygote or any worker runs imports the simulated node (``sriovdp.simnode``) or anything under
``tests`` (checked in a fresh interpreter that imports all of them, as the zygote's preload and
the supervisor do). Only ``sriov-supervisor demo`` (``sriovdp.supervisor.demo``) uses it."""

from __future__ import annotations

import pkgutil

import sriovdp
from tests.test_import_hygiene import probe

#: the CLI's demo command builds a simulated node on purpose; nothing else may
DEMO_ONLY = {"sriovdp.supervisor.demo"}

PRODUCTION = sorted(
    info.name
    for info in pkgutil.walk_packages(sriovdp.__path__, "sriovdp.")
    if not info.name.startswith("sriovdp.simnode")
    and info.name not in DEMO_ONLY
    and not info.name.endswith("__main__")
)

SUPPORT = "sriovdp.simnode,tests"


def test_production_modules_never_load_the_simulated_node() -> None:
    assert "sriovdp.launch.zygote" in PRODUCTION
    assert "sriovdp.workers.plugin.main" in PRODUCTION
    assert "sriovdp.supervisor.main" in PRODUCTION
    assert probe(PRODUCTION, SUPPORT) == []


def test_the_check_can_fail() -> None:
    assert "sriovdp.simnode" in probe(["sriovdp.supervisor.demo"], SUPPORT)
