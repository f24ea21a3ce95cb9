"""What the zygote preloads (``sriovdp.workers.zygote.PRELOAD``), checked in fresh interpreters:
every name still exists, and preloading never brings in grpc."""

from __future__ import annotations

import json
import subprocess
import sys

from sriovdp.workers.zygote import PRELOAD

_PROBE = """
import json, sys
from sriovdp.workers.zygote import preload
missing = preload()
print(json.dumps({"missing": missing, "grpc": sorted(m for m in sys.modules
                                                  if m == "grpc" or m.startswith("grpc."))}))
"""


def _preload_in_a_fresh_interpreter() -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, list[str]] = json.loads(out)
    return result


def test_every_preloaded_module_exists_and_none_is_grpc() -> None:
    """preload() skips a module it cannot import, so a renamed one would silently stop being
    shared: every name must import. And grpc (C-core threads) is no longer used by any worker."""
    result = _preload_in_a_fresh_interpreter()
    assert result["missing"] == []
    assert result["grpc"] == []


def test_the_plugin_workers_grpc_is_preloaded() -> None:
    assert "sriovdp.workers.grpcwire.server" in PRELOAD
    assert "sriovdp.workers.grpcwire.client" in PRELOAD
    assert not any(name == "grpc" or name.endswith("_grpc") for name in PRELOAD)
