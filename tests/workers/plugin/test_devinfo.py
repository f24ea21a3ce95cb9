"""sriovdp.workers.plugin.devinfo: which files prune takes (only its resource's, also of devices
that left the pool), what it keeps (held by a pod, or freshly written) and Allocate refreshing a
file's age."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sriovdp.workers.plugin.allocation import Prepared
from sriovdp.workers.plugin.devinfo import DevInfoWriter

R = "intel.com/sriov"


def prepared(resource: str, device_id: str) -> Prepared:
    name = f"{resource.replace('/', '-')}-{device_id}-device.json"
    return Prepared(device_id, (), (), (), "", {}, name, b"{}", "")


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_prune_keeps_held_young_and_other_resources(tmp_path: Path) -> None:
    writer = DevInfoWriter(tmp_path)
    ids = ["0000:03:00.1", "0000:03:00.2", "0000:03:00.3"]
    assert writer.write(prepared(R, i) for i in ids) == []
    # a pool whose name extends ours, a stranger, a device that left the pool (an earlier run)
    for name in (
        "intel.com-sriov-x-0000:03:00.4-device.json",
        "intel.com-sriov-x-device.json",
        "someone-else.json",
        "intel.com-sriov-0000:09:00.0-device.json",
    ):
        (tmp_path / name).write_text("{}")
    for p in tmp_path.iterdir():
        age(p, 3600)
    age(tmp_path / f"intel.com-sriov-{ids[2]}-device.json", 1)  # allocated a second ago
    removed, young = writer.prune(R, {ids[0]}, ids)
    assert (sorted(removed), young) == (["0000:03:00.2", "0000:09:00.0"], 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "intel.com-sriov-0000:03:00.1-device.json",
        "intel.com-sriov-0000:03:00.3-device.json",
        "intel.com-sriov-x-0000:03:00.4-device.json",
        "intel.com-sriov-x-device.json",
        "someone-else.json",
    ]


def test_allocate_again_refreshes_the_age_and_rewrites_a_lost_file(tmp_path: Path) -> None:
    writer = DevInfoWriter(tmp_path)
    entry = prepared(R, "0000:03:00.1")
    path = tmp_path / entry.devinfo_name
    assert writer.write([entry]) == []
    age(path, 3600)
    assert writer.write([entry]) == []  # the same device, another pod: touched
    assert writer.prune(R, set(), [entry.id]) == ([], 1)
    path.unlink()
    assert writer.write([entry]) == [] and path.read_bytes() == b"{}"
    age(path, 3600)
    assert writer.prune(R, set(), [entry.id]) == (["0000:03:00.1"], 0)
    assert writer.prune(R, set(), [entry.id]) == ([], 0)


def test_prune_of_a_missing_directory(tmp_path: Path) -> None:
    assert DevInfoWriter(tmp_path / "nope").prune(R, set(), ["0000:03:00.1"]) == ([], 0)
