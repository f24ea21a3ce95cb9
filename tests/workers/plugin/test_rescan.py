"""Rescanner: the quick check reads the pool's candidates only and sees what changes them."""

from __future__ import annotations

import json
from pathlib import Path

from sriovdp.shared import pools
from sriovdp.shared.config import parse_config
from sriovdp.shared.model import PoolDevice, PoolDiscovery
from sriovdp.simnode import scale_node
from sriovdp.workers.plugin.rescan import Rescanner, fingerprint

DOC = {
    "resourceList": [
        {"resourceName": "a", "selectors": {"pfNames": ["scl0"]}},
        {"resourceName": "any", "selectors": {"drivers": ["iavf"]}},
    ]
}


def rescanner(root: Path, child: str, with_pool: bool) -> tuple[Rescanner, list[PoolDiscovery]]:
    config = parse_config(json.dumps(DOC), "c.json", "intel.com")
    applied: list[PoolDiscovery] = []
    devices: list[PoolDevice] = []

    def discover() -> PoolDiscovery:
        return pools.discover_pool(config, child, root, root / "no-proc")

    def apply(found: PoolDiscovery) -> bool:
        applied.append(found)
        changed = list(found.devices) != devices
        devices[:] = found.devices
        return changed

    apply(discover())
    pool = config.pool(child) if with_pool else None
    return Rescanner(root, discover, apply, lambda: list(devices), pool=pool), applied


def test_targeted_check_sees_its_pf_and_ignores_the_others(tmp_path: Path) -> None:
    node = scale_node(tmp_path, 2, 4)
    r, applied = rescanner(tmp_path, "intel-com_a", with_pool=True)
    assert not r.check() and r.rescans == 0
    node.set_num_vfs("0000:01:00.1", 2)  # the other PF
    node.bind("0000:03:00.0", "vfio-pci")
    assert not r.check() and r.rescans == 0
    node.bind("0000:02:00.1", "vfio-pci")  # one of ours: its driver
    assert r.check() and r.rescans == 1  # rediscovered: the device changed, still listed
    assert len(applied[-1].devices) == 4
    node.set_num_vfs("0000:01:00.0", 2)
    assert r.check() and len(applied[-1].devices) == 2


def test_without_the_pool_the_first_check_rediscovers_and_learns_it(tmp_path: Path) -> None:
    node = scale_node(tmp_path, 2, 4)
    r, applied = rescanner(tmp_path, "intel-com_a", with_pool=False)
    assert not r.check() and r.rescans == 1  # first check: a discovery
    assert not r.check() and r.rescans == 1
    node.set_num_vfs("0000:01:00.1", 2)
    assert not r.check() and r.rescans == 1
    node.set_num_vfs("0000:01:00.0", 3)
    assert r.check() and len(applied[-1].devices) == 3


def test_a_full_scan_pool_watches_the_bus(tmp_path: Path) -> None:
    node = scale_node(tmp_path, 2, 4)
    r, applied = rescanner(tmp_path, "intel-com_any", with_pool=True)
    assert fingerprint(tmp_path, [], applied[0].pool)[0] == "bus"
    node.bind("0000:03:00.0", "vfio-pci")
    assert r.check() and len(applied[-1].devices) == 3  # 4 of PF0 claimed by pool a
