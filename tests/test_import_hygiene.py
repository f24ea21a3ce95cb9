"""The CLI and the supervisor must not load grpc, protobuf or pyroute2 (checked in a fresh
interpreter, for every sriovdp.supervisor module that exists, found with pkgutil); the workers
must not load grpc at all (their gRPC is sriovdp.workers.grpcwire, pure Python over h2)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import sriovdp.supervisor
import sriovdp.workers

FORBIDDEN = ("grpc", "google.protobuf", "pyroute2")
MODULES = [
    "sriovdp.supervisor.cli",
    *sorted(
        info.name
        for info in pkgutil.walk_packages(sriovdp.supervisor.__path__, "sriovdp.supervisor.")
    ),
]

#: every module a worker process can load: the plugin worker's entry and all of sriovdp.workers
WORKER_MODULES = [
    "sriovdp.workers.plugin.main",
    *sorted(
        info.name for info in pkgutil.walk_packages(sriovdp.workers.__path__, "sriovdp.workers.")
    ),
]

_PROBE = """
import importlib, json, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
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


def test_worker_modules_import_no_grpc() -> None:
    """One fresh interpreter imports the whole set, as a plugin worker forked from the zygote
    has it (no module may pull grpc in through another)."""
    assert "sriovdp.workers.grpcwire.server" in WORKER_MODULES
    assert "sriovdp.workers.plugin.registration" in WORKER_MODULES
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(WORKER_MODULES), "grpc"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == []


def test_probe_detects_grpc() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "sriovdp.proto.api_pb2_grpc", "grpc"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "grpc" in json.loads(out)
