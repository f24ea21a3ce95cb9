"""Rescanner for an SF pool: a subfunction created or removed while the worker runs is noticed
by the quick check (SFs come and go without any PCI function changing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sriovdp.shared import pools
from sriovdp.shared.config import parse_config
from sriovdp.shared.model import PoolDevice, PoolDiscovery
from sriovdp.simnode import upstream_node, upstream_readme_config
from sriovdp.workers.plugin.rescan import Rescanner

CHILD = "nvidia-com_bf2_sf"


def test_new_and_removed_sfs_are_noticed(tmp_path: Path) -> None:
    node = upstream_node(tmp_path / "sys")
    config = parse_config(json.dumps(upstream_readme_config()), "c.json", "intel.com")
    devices: list[PoolDevice] = []

    def discover() -> PoolDiscovery:
        return pools.discover_pool(config, CHILD, node.root, tmp_path / "no-proc")

    def apply(found: PoolDiscovery) -> bool:
        changed = list(found.devices) != devices
        devices[:] = found.devices
        return changed

    apply(discover())
    rescanner = Rescanner(node.root, discover, apply, lambda: list(devices), config.pool(CHILD))
    assert [d.id for d in devices] == ["mlx5_core.sf.0", "mlx5_core.sf.1", "mlx5_core.sf.3"]
    assert rescanner.check() is False

    name = node.add_sf("0000:03:00.0", 5, netdev="en3f0pf0sf5")
    assert rescanner.check() is True
    assert [d.id for d in devices][-1] == name

    gone = node.root / "bus/auxiliary/devices" / name
    shutil.rmtree(gone.resolve())
    gone.unlink()
    (node.root / "class/net/en3f0pf0sf5").unlink()
    assert rescanner.check() is True
    assert name not in [d.id for d in devices]
    assert rescanner.check() is False
