"""Fixtures shared with the plugin worker tests: a fake node, the kubelet stand-in, a bus broker
in a thread and real worker processes (see tests/workers/plugin/conftest.py)."""

from tests.workers.plugin.conftest import broker, demo, kubelet, node, spawn

__all__ = ["broker", "demo", "kubelet", "node", "spawn"]
