"""What the zygote preloads (``sriovdp.launch.zygote.PRELOAD``), checked in fresh interpreters:
every name still exists, preloading never brings in grpc, and the worker code is laid out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from sriovdp.launch.zygote import PRELOAD

_PROBE = """
import json, logging, sys
from sriovdp.launch import zygote
import sriovdp.workers.plugin.main as plugin_main
import_time_code = plugin_main.Worker.run.__code__
moved = []
zygote.log.setLevel(logging.DEBUG)
zygote.log.addHandler(logging.StreamHandler(sys.stdout))
zygote.log.handlers[0].emit = lambda record: moved.append(record.getMessage())
missing = zygote.preload()
print(json.dumps({"missing": missing, "grpc": sorted(m for m in sys.modules
                                                  if m == "grpc" or m.startswith("grpc.")),
                  "log": moved,
                  "moved_run": plugin_main.Worker.run.__code__ is not import_time_code}))
"""


def _preload_in_a_fresh_interpreter() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def test_every_preloaded_module_exists_and_none_is_grpc() -> None:
    """preload() skips a module it cannot import, so a renamed one would silently stop being
    shared: every name must import. And grpc (C-core threads) is no longer used by any worker."""
    result = _preload_in_a_fresh_interpreter()
    assert result["missing"] == []
    assert result["grpc"] == []


def test_the_zygote_lays_out_the_code_a_worker_runs() -> None:
    """The rehearsal and the scout work in a plain interpreter (no warning), and several hundred
    functions, the worker's main loop among them, run laid-out copies of their code."""
    result = _preload_in_a_fresh_interpreter()
    assert not any("not laid out" in line for line in result["log"]), result["log"]
    counts = [int(m[1]) for line in result["log"] if (m := re.match(r"laid out .* (\d+) ", line))]
    assert counts and counts[0] > 500, result["log"]
    assert result["moved_run"] is True


def test_the_plugin_workers_grpc_is_preloaded() -> None:
    assert "sriovdp.workers.grpcwire.server" in PRELOAD
    assert "sriovdp.workers.grpcwire.client" in PRELOAD
    assert not any(name == "grpc" or name.endswith("_grpc") for name in PRELOAD)
