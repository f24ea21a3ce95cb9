"""Files a pool's worker leaves on the node, with the real supervisor: a pool removed by reload
takes its CDI spec and the device-info files no pod holds along; a stop of the supervisor (an
upgrade) keeps everything a pod may still need."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest

from sriovdp.supervisor.client import ControlClient
from tests.integration.conftest import SimNode, pool_config, resource
from tests.reliability.procs import settle

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimNode]:
    monkeypatch.setenv("SRIOV_DP_USE_CDI", "true")
    # reloads by hand only: the supervisor's own reload of the edited file would race them
    monkeypatch.setenv("SRIOV_DP_WATCH_CONFIG", "false")
    n = SimNode(2, 4)
    try:
        n.start_supervisor()
        yield n
    finally:
        n.close()


def test_reload_removing_a_pool_vs_stopping_the_supervisor(node: SimNode) -> None:
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 60), node.log_text()
    devinfo, cdi = node.base / "devinfo", node.base / "cdi"
    held, freed = sorted(node.vfs(1))[:2]
    k.allocate(resource(1), [held], pod_uid="running")
    k.allocate(resource(1), [freed], pod_uid="deleted")
    freed_file = devinfo / f"intel.com-pool1-{freed}-device.json"
    then = time.time() - 3600  # that pod ran for an hour before it was deleted
    os.utime(freed_file, (then, then))
    k.delete_pod("deleted")
    k.allocate(resource(0), [sorted(node.vfs(0))[0]], pod_uid="running")
    specs = {"sriov-dp_intel-com_pool0.json", "sriov-dp_intel-com_pool1.json"}
    assert {p.name for p in cdi.iterdir()} == specs

    config = pool_config(2)
    config["resourceList"] = config["resourceList"][:1]
    node.config.write_text(json.dumps(config))
    with ControlClient(node.run_dir, timeout=10.0) as client:
        result = client.request("reload")
    assert result["stopped"] == ["intel-com_pool1"], result
    assert settle(lambda: "intel-com_pool1" not in node.rows(), 30), node.log_text()
    assert {p.name for p in cdi.iterdir()} == {"sriov-dp_intel-com_pool0.json"}
    assert not freed_file.exists()
    assert (devinfo / f"intel.com-pool1-{held}-device.json").exists()  # a pod still holds it

    before = sorted(p.name for p in devinfo.iterdir())
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0, node.log_text()
    assert sorted(p.name for p in devinfo.iterdir()) == before
    assert {p.name for p in cdi.iterdir()} == {"sriov-dp_intel-com_pool0.json"}
