"""The CLI and the supervisor must not load grpc, protobuf or pyroute2 (checked in a fresh
interpreter, for every sriovdp.supervisor module that exists, found with pkgutil)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import sriovdp.supervisor

FORBIDDEN = ("grpc", "google.protobuf", "pyroute2")
MODULES = [
    "sriovdp.supervisor.cli",
    *sorted(
        info.name
        for info in pkgutil.walk_packages(sriovdp.supervisor.__path__, "sriovdp.supervisor.")
    ),
]

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
forbidden = sys.argv[2].split(",")
print(json.dumps(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".")
                                                      for f in forbidden))))
"""


def test_the_supervisor_package_has_modules() -> None:
    assert "sriovdp.supervisor.cli_config" in MODULES
    assert "sriovdp.supervisor.options" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_no_heavy_dependency(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == []


def test_probe_detects_a_violation() -> None:
    """The check itself can fail: a module that pulls protobuf is caught."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "sriovdp.proto.api_pb2", ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "google.protobuf" in json.loads(out)
