"""Device-info files live as long as a pod holds the device: real worker processes, the kubelet
stand-in writing its checkpoint in the kubelet's format, and (on the bus) a real kubelet watcher
announcing each checkpoint rewrite."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sriovdp.simnode.kubelet import KubeletStandIn
from tests.harness.broker import BrokerThread
from tests.workers.conftest import worker_argv
from tests.workers.plugin.conftest import Node
from tests.workers.plugin.test_worker import VFIO, start, until

pytestmark = pytest.mark.timeout(90)

SPEC = "sriov-dp_intel-com_sriov_vfio.json"


def devinfo(node: Node, device_id: str) -> Path:
    return node.devinfo_dir / f"intel.com-sriov_vfio-{device_id}-device.json"


def allocated_long_ago(path: Path) -> None:
    """As if the pod had run for an hour (a fresh file is kept whatever the checkpoint says)."""
    then = time.time() - 3600
    os.utime(path, (then, then))


def files(node: Node) -> list[str]:
    return sorted(p.name for p in node.devinfo_dir.iterdir()) if node.devinfo_dir.exists() else []


@pytest.fixture
def watcher(demo: Node, broker: BrokerThread) -> Any:
    """A real kubelet watcher on the node's plugin dir, on the test's bus."""
    log = demo.base / "kw.log"
    argv = worker_argv("kubelet-watcher", "kubelet-watcher", demo.run_dir)
    with log.open("wb") as err:
        proc = subprocess.Popen([*argv, "--plugin-dir", str(demo.plugin_dir)], stderr=err)
    yield proc
    proc.terminate()
    proc.wait(10)


def test_sigterm_keeps_the_files_of_held_devices_and_the_cdi_spec(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    worker = start(spawn, kubelet, VFIO, "--use-cdi")
    kubelet.allocate(VFIO, ["0000:04:00.4"], pod_uid="running")
    kubelet.allocate(VFIO, ["0000:04:00.5"], pod_uid="deleted")
    allocated_long_ago(devinfo(demo, "0000:04:00.5"))
    kubelet.delete_pod("deleted")
    assert worker.terminate() == 0, worker.log()
    assert demo.sockets() == ["kubelet.sock"]  # its own socket: nobody can use it any more
    assert files(demo) == ["intel.com-sriov_vfio-0000:04:00.4-device.json"]
    assert (demo.cdi_dir / SPEC).exists()  # the running pod's container may restart
    # the next worker of the pool (an upgrade, a restart) keeps it too, and serves the same file
    worker = start(spawn, kubelet, VFIO, "--use-cdi")
    assert files(demo) == ["intel.com-sriov_vfio-0000:04:00.4-device.json"]
    doc = json.loads(devinfo(demo, "0000:04:00.4").read_text())
    assert doc["pci"]["pci-address"] == "0000:04:00.4"
    assert worker.terminate() == 0


def test_start_removes_only_the_files_no_pod_holds(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    """Files left by an earlier process (a crash, a node that rebooted the plugin pod)."""
    demo.devinfo_dir.mkdir()
    for dev in ("0000:04:00.4", "0000:04:00.5", "0000:05:00.4", "0000:09:00.0"):
        devinfo(demo, dev).write_text("{}")
        allocated_long_ago(devinfo(demo, dev))
    other = demo.devinfo_dir / "intel.com-sriov_net_A-0000:04:00.1-device.json"
    other.write_text("{}")
    allocated_long_ago(other)
    held = {"Data": {"PodDeviceEntries": [
        {"PodUID": "p", "ContainerName": "c", "ResourceName": "intel.com/sriov_vfio",
         "DeviceIDs": {"0": ["0000:04:00.5"]}, "AllocResp": ""},
    ], "RegisteredDevices": {}}, "Checksum": 1}  # fmt: skip
    kubelet.checkpoints = False
    kubelet.checkpoint.write_text(json.dumps(held))
    worker = start(spawn, kubelet, VFIO)
    assert until(lambda: "removed 3 device-info files" in worker.log()), worker.log()
    assert files(demo) == [
        "intel.com-sriov_net_A-0000:04:00.1-device.json",  # another pool's: not ours to judge
        "intel.com-sriov_vfio-0000:04:00.5-device.json",
    ]
    assert worker.terminate() == 0, worker.log()


@pytest.mark.parametrize(
    "checkpoint",
    [None, "", "{not json", '{"Data": {"PodDeviceEntries": [{"ResourceName": 7}]}}', "[]"],
    ids=["missing", "empty", "broken", "bad-entry", "list"],
)
def test_an_unusable_checkpoint_removes_nothing_and_warns_once(
    demo: Node, kubelet: KubeletStandIn, spawn: Any, checkpoint: str | None
) -> None:
    demo.devinfo_dir.mkdir()
    devinfo(demo, "0000:04:00.4").write_text("{}")
    allocated_long_ago(devinfo(demo, "0000:04:00.4"))
    kubelet.checkpoints = False  # the file stays as the test made it
    path = kubelet.checkpoint
    if checkpoint is not None:
        path.write_text(checkpoint)
    worker = start(spawn, kubelet, VFIO, "--heartbeat-interval", "0.2")
    assert until(lambda: "kubelet checkpoint not usable" in worker.log()), worker.log()
    # heartbeats (no bus) and the stop read it again: still nothing removed, one warning
    assert worker.terminate() == 0
    assert files(demo) == ["intel.com-sriov_vfio-0000:04:00.4-device.json"]
    log = worker.log()
    assert log.count("kubelet checkpoint not usable") == 1, log
    assert f"{path}: " in log and "Traceback" not in log


def test_each_checkpoint_rewrite_prunes_on_the_bus(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, watcher: Any, spawn: Any
) -> None:
    # a long heartbeat: only the watcher's announcement can make the worker look again
    worker = start(
        spawn, kubelet, VFIO, "--run-dir", str(demo.run_dir), "--heartbeat-interval", "60"
    )
    kubelet.allocate(VFIO, ["0000:04:00.4"], pod_uid="a")
    kubelet.allocate(VFIO, ["0000:04:00.5", "0000:05:00.4"], pod_uid="b")
    for dev in ("0000:04:00.4", "0000:04:00.5", "0000:05:00.4"):
        allocated_long_ago(devinfo(demo, dev))
    kubelet.delete_pod("b")
    assert until(lambda: files(demo) == ["intel.com-sriov_vfio-0000:04:00.4-device.json"]), (
        worker.log()
    )
    kubelet.delete_pod("a")
    assert until(lambda: files(demo) == []), worker.log()
    assert worker.proc.poll() is None


def test_a_fresh_allocation_the_checkpoint_does_not_list_yet_is_kept(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, watcher: Any, spawn: Any
) -> None:
    """The kubelet records an allocation after every plugin of the container answered; a
    checkpoint written in between must not take the new file away."""
    worker = start(
        spawn, kubelet, VFIO, "--run-dir", str(demo.run_dir), "--heartbeat-interval", "60"
    )
    kubelet.allocate(VFIO, ["0000:04:00.4"], pod_uid="old")
    allocated_long_ago(devinfo(demo, "0000:04:00.4"))
    kubelet.allocate(VFIO, ["0000:04:00.5"], record=False)  # not in the checkpoint yet
    kubelet.delete_pod("old")  # a rewrite without it
    assert until(lambda: not devinfo(demo, "0000:04:00.4").exists()), worker.log()
    assert devinfo(demo, "0000:04:00.5").exists()


def test_a_pool_removed_from_the_config_takes_its_cdi_spec_and_unheld_files_along(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    worker = start(spawn, kubelet, VFIO, "--use-cdi")
    kubelet.allocate(VFIO, ["0000:04:00.4"], pod_uid="running")
    kubelet.allocate(VFIO, ["0000:04:00.5"], pod_uid="gone")
    allocated_long_ago(devinfo(demo, "0000:04:00.5"))
    kubelet.delete_pod("gone")
    config = json.loads(demo.config_file.read_text())
    config["resourceList"] = [
        e for e in config["resourceList"] if e["resourceName"] != "sriov_vfio"
    ]
    demo.write_config(config)  # what the supervisor's snapshot says before it stops the pool
    assert worker.terminate() == 0, worker.log()
    assert not (demo.cdi_dir / SPEC).exists()
    assert files(demo) == ["intel.com-sriov_vfio-0000:04:00.4-device.json"]  # still held
    assert "CDI spec (pool removed from the config)" in worker.log()


def test_crash_keeps_every_file(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    worker = start(spawn, kubelet, VFIO, "--use-cdi")
    kubelet.allocate(VFIO, ["0000:04:00.5"])
    worker.proc.kill()
    worker.wait()
    assert devinfo(demo, "0000:04:00.5").exists() and (demo.cdi_dir / SPEC).exists()
