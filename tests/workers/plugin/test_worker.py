"""Real worker processes on fake sysfs trees against the kubelet stand-in (standalone: no bus)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.shared import exitcodes
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.workers.plugin.conftest import Node, worker_env

pytestmark = pytest.mark.timeout(60)

NET = "intel.com/sriov_net_A"
VFIO = "intel.com/sriov_vfio"
UIO = "intel.com/sriov_uio"
CHILD = {NET: "intel-com_sriov_net_A", VFIO: "intel-com_sriov_vfio", UIO: "intel-com_sriov_uio"}


def until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def listed(kubelet: KubeletStandIn, resource: str, count: int | None = None) -> bool:
    ok = kubelet.connected(resource) and kubelet.lists_received(resource) > 0
    return ok and (count is None or len(kubelet.devices(resource)) == count)


def start(spawn: Any, kubelet: KubeletStandIn, resource: str, *args: str) -> Any:
    worker = spawn(CHILD[resource], *args)
    assert kubelet.wait_for(lambda k: listed(k, resource), 30), worker.log()
    return worker


def ids(kubelet: KubeletStandIn, resource: str) -> list[str]:
    return [d.id for d in kubelet.devices(resource)]


def test_serves_before_registering(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    worker = start(spawn, kubelet, VFIO)
    (reg,) = kubelet.registrations
    # the stand-in answers Register only after dialling the endpoint back: serving came first
    assert re.fullmatch(r"intel-com_sriov_vfio-[0-9a-f]{8}\.sock", reg.endpoint)
    assert reg.options.get_preferred_allocation_available
    assert kubelet.refused == []
    assert demo.sockets() == sorted(["kubelet.sock", reg.endpoint])
    devices = kubelet.devices(VFIO)
    assert [(d.id, d.health, d.numa) for d in devices] == [
        ("0000:04:00.4", "Healthy", (0,)), ("0000:04:00.5", "Healthy", (0,)),
        ("0000:05:00.4", "Healthy", (1,)), ("0000:05:00.5", "Healthy", (1,)),
    ]  # fmt: skip
    assert worker.proc.poll() is None


def test_kubelet_absent_at_start(demo: Node, spawn: Any) -> None:
    stale = demo.plugin_dir / "intel-com_sriov_uio-00000000.sock"
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    worker = spawn(CHILD[UIO], "--register-backoff-max", "0.3")
    assert until(lambda: "kubelet.sock absent" in worker.log())
    assert not stale.exists()  # a stale socket of the same pool was removed first
    kubelet = KubeletStandIn(demo.plugin_dir)
    try:
        assert kubelet.wait_for(lambda k: listed(k, UIO, 4), 30), worker.log()
    finally:
        kubelet.stop()


def test_allocate_each_demo_driver(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    for resource in (NET, VFIO, UIO):
        start(spawn, kubelet, resource)
    net = kubelet.allocate(NET, ["0000:05:00.1", "0000:04:00.0"])
    assert net.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_A"] == "0000:05:00.1,0000:04:00.0"
    info = json.loads(net.envs["PCIDEVICE_INTEL_COM_SRIOV_NET_A_INFO"])
    assert info["0000:04:00.0"] == {"generic": {"deviceID": "0000:04:00.0"}}
    assert list(net.devices) == []
    vfio = kubelet.allocate(VFIO, ["0000:04:00.4"])  # first call for this device: complete
    info = json.loads(vfio.envs["PCIDEVICE_INTEL_COM_SRIOV_VFIO_INFO"])["0000:04:00.4"]
    group = info["vfio"]["dev-mount"]
    assert info["vfio"]["mount"] == "/dev/vfio/vfio" and re.fullmatch(r"/dev/vfio/\d+", group)
    assert [(d.container_path, d.host_path, d.permissions) for d in vfio.devices] == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"), (group, group, "rw"),
    ]  # fmt: skip
    uio = kubelet.allocate(UIO, ["0000:04:00.6", "0000:05:00.7"])
    mounts = [d.host_path for d in uio.devices]
    assert len(mounts) == 2 and all(re.fullmatch(r"/dev/uio\d+", m) for m in mounts)
    uio_info = json.loads(uio.envs["PCIDEVICE_INTEL_COM_SRIOV_UIO_INFO"])
    assert [uio_info[i]["uio"]["mount"] for i in ("0000:04:00.6", "0000:05:00.7")] == mounts
    files = sorted(p.name for p in demo.devinfo_dir.iterdir())
    assert "intel.com-sriov_vfio-0000:04:00.4-device.json" in files and len(files) == 5
    doc = json.loads(
        (demo.devinfo_dir / "intel.com-sriov_net_A-0000:05:00.1-device.json").read_text()
    )
    pci = {"pci-address": "0000:05:00.1", "pf-pci-address": "0000:03:00.1"}
    assert doc == {"type": "pci", "version": "1.1.0", "pci": pci}


def test_rdma_vhost_and_noiommu(node: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    node.sysfs.add_pf("0000:01:00.0", netdev="mlx0", driver="mlx5_core", device="1017",
                      vf_device="1018", num_vfs=2, vf_driver="mlx5_core", rdma=True)  # fmt: skip
    node.sysfs.add_function("0000:40:00.0", driver="vfio-pci", noiommu=True, device="1889")
    (node.dev_root / "dev/net").mkdir(parents=True)
    (node.dev_root / "dev/vhost-net").touch()
    (node.dev_root / "dev/net/tun").touch()
    node.write_config({"resourceList": [
        {"resourceName": "rdma", "selectors": {"devices": ["1018"], "isRdma": True}},
        {"resourceName": "dpdk", "selectors": {"devices": ["1889"], "needVhostNet": True}},
    ]})  # fmt: skip
    spawn("intel-com_rdma")
    spawn("intel-com_dpdk")
    assert kubelet.wait_for(
        lambda k: listed(k, "intel.com/rdma", 2) and listed(k, "intel.com/dpdk", 1), 15
    )
    resp = kubelet.allocate("intel.com/rdma", ids(kubelet, "intel.com/rdma")[:1])
    paths = [d.host_path for d in resp.devices]
    assert paths[-1] == "/dev/infiniband/rdma_cm"
    assert {re.sub(r"\d+$", "", os.path.basename(p)) for p in paths[:-1]} == {
        "issm",
        "umad",
        "uverbs",
    }
    info = json.loads(resp.envs["PCIDEVICE_INTEL_COM_RDMA_INFO"])
    assert next(iter(info.values()))["rdma"]["rdma_dev"].endswith("_ib")
    resp = kubelet.allocate("intel.com/dpdk", ["0000:40:00.0"])
    pairs = [(d.container_path, d.host_path) for d in resp.devices]
    group = pairs[1][0].rsplit("/", 1)[1]
    assert pairs == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio"),
        (f"/dev/vfio/{group}", f"/dev/vfio/noiommu-{group}"),
        ("/dev/vhost-net", "/dev/vhost-net"),
        ("/dev/net/tun", "/dev/net/tun"),
    ]


def test_refused_requests(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    worker = start(spawn, kubelet, VFIO)
    stub = kubelet.stub(VFIO)
    good = "0000:04:00.4"
    cases: list[tuple[list[list[str]], grpc.StatusCode, str]] = [
        ([["0000:ff:1f.7"]], grpc.StatusCode.INVALID_ARGUMENT, "0000:ff:1f.7"),
        ([[good, good]], grpc.StatusCode.INVALID_ARGUMENT, "twice"),
        ([[]], grpc.StatusCode.INVALID_ARGUMENT, "no device"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "no container"),
        (
            [[good] + [f"0000:00:00.{i}" for i in range(5000)]],
            grpc.StatusCode.INVALID_ARGUMENT,
            "5001",
        ),
        ([["z" * 1_000_000]], grpc.StatusCode.INVALID_ARGUMENT, "zzz..."),
        ([[good], ["nope"]], grpc.StatusCode.INVALID_ARGUMENT, "nope"),
    ]
    for containers, code, text in cases:
        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=c) for c in containers]
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.Allocate(request, timeout=5)
        assert err.value.code() == code and text in err.value.details()
        assert len(err.value.details()) < 300
    assert not demo.devinfo_dir.exists() or list(demo.devinfo_dir.iterdir()) == []
    assert worker.proc.poll() is None
    assert kubelet.allocate(VFIO, [good]).envs  # still serving


def test_preferred_allocation_over_grpc(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    start(spawn, kubelet, NET)  # packed
    start(spawn, kubelet, UIO)  # balanced
    net = ids(kubelet, NET)
    got = kubelet.preferred(NET, net, ["0000:05:00.2"], 3)
    assert got[0] == "0000:05:00.2" and {i[:7] for i in got} == {"0000:05"}  # same PF and NUMA
    uio = ids(kubelet, UIO)
    got = kubelet.preferred(UIO, uio, [], 2)
    assert sorted(i[:7] for i in got) == ["0000:04", "0000:05"]
    assert kubelet.preferred(UIO, uio, [], 9) == []


def test_cdi_and_sigterm_cleanup(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    worker = start(spawn, kubelet, VFIO, "--use-cdi")
    spec_file = demo.cdi_dir / "sriov-dp_intel-com_sriov_vfio.json"
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == "intel.com/net-pci" and len(spec["devices"]) == 4
    resp = kubelet.allocate(VFIO, ["0000:05:00.5"])
    assert [c.name for c in resp.cdi_devices] == ["intel.com/net-pci=0000:05:00.5"]
    assert resp.annotations["cdi.k8s.io/intel.com_sriov_vfio"] == "intel.com/net-pci=0000:05:00.5"
    assert (
        list(resp.devices) == [] and resp.envs["PCIDEVICE_INTEL_COM_SRIOV_VFIO"] == "0000:05:00.5"
    )
    devinfo = demo.devinfo_dir / "intel.com-sriov_vfio-0000:05:00.5-device.json"
    assert devinfo.exists()
    (demo.devinfo_dir / "someone-else.json").write_text("{}")
    assert worker.terminate() == 0
    assert demo.sockets() == ["kubelet.sock"]
    # a pod holds the device and the pool is still configured: both stay (test_devinfo_lifetime)
    assert spec_file.exists() and devinfo.exists()
    assert (demo.devinfo_dir / "someone-else.json").exists()
    assert kubelet.wait_for(lambda k: k.allocatable()[VFIO] == 0, 30)


def test_crash_keeps_devinfo(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    worker = start(spawn, kubelet, VFIO)
    kubelet.allocate(VFIO, ["0000:04:00.5"])
    worker.proc.kill()
    worker.wait()
    assert (demo.devinfo_dir / "intel.com-sriov_vfio-0000:04:00.5-device.json").exists()


def test_unwritable_devinfo_dir_still_answers(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    blocker = demo.base / "blocker"
    blocker.write_text("a file where a directory should be")
    worker = start(spawn, kubelet, VFIO, "--devinfo-dir", str(blocker / "devinfo"))
    resp = kubelet.allocate(VFIO, ["0000:04:00.4"])
    assert resp.envs["PCIDEVICE_INTEL_COM_SRIOV_VFIO"] == "0000:04:00.4"
    assert until(lambda: "device-info not written (1 failures so far)" in worker.log())


def test_cancelled_list_and_watch_releases_its_stream(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    worker = start(spawn, kubelet, VFIO)
    channel = grpc.insecure_channel(f"unix:{demo.plugin_dir / kubelet.endpoint(VFIO)}")  # type: ignore[operator]
    stub = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
    # far more streams than the server has threads: leaked ones would starve later calls
    for _ in range(40):
        call = stub.ListAndWatch(api_pb2.Empty())
        assert len(next(call).devices) == 4
        call.cancel()
    assert stub.GetDevicePluginOptions(
        api_pb2.Empty(), timeout=10
    ).get_preferred_allocation_available
    assert kubelet.allocate(VFIO, ["0000:04:00.4"], timeout=10).envs
    assert until(lambda: worker.log().count("ListAndWatch stream closed: client left") == 40)
    assert kubelet.connected(VFIO)  # the kubelet's own stream is untouched
    channel.close()


def test_config_problems_exit_with_child_config(demo: Node, spawn: Any) -> None:
    worker = spawn("intel-com_no_such_pool")
    assert worker.wait() == exitcodes.CHILD_CONFIG
    assert "no pool 'intel-com_no_such_pool'" in worker.log()
    demo.config_file.write_text("{not json")
    worker = spawn(CHILD[VFIO])
    assert worker.wait() == exitcodes.CHILD_CONFIG
    assert "invalid config" in worker.log()


DRIVER_MODULE = """
from sriovdp.workers.plugin.drivers import DriverFamily, Spec, register

@register
class FakeAccel(DriverFamily):
    name = "fake-accel"

    def applies(self, device):
        return device.function.driver == "fake_accel"

    def specs(self, device, ctx):
        return (Spec("/dev/accel0", "/dev/accel/" + device.id),)

    def info(self, device, ctx):
        return {"accel": {"engine": "fake"}}
"""


def test_new_device_type_from_a_module(node: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    (node.base / "mods").mkdir()
    (node.base / "mods" / "fake_accel_driver.py").write_text(DRIVER_MODULE)
    node.sysfs.add_function("0000:30:00.0", driver="fake_accel", pci_class=0x120000, device="0d5c")
    node.write_config({"resourceList": [{"resourceName": "accel", "deviceType": "accelerator",
                                         "selectors": {"drivers": ["fake_accel"]}}]})  # fmt: skip
    env = worker_env()
    env["PYTHONPATH"] = f"{node.base / 'mods'}{os.pathsep}{env['PYTHONPATH']}"
    spawn("intel-com_accel", "--driver-module", "fake_accel_driver", env=env)
    assert kubelet.wait_for(lambda k: listed(k, "intel.com/accel", 1), 30)
    resp = kubelet.allocate("intel.com/accel", ["0000:30:00.0"])
    assert [(d.container_path, d.host_path) for d in resp.devices] == [
        ("/dev/accel0", "/dev/accel/0000:30:00.0")
    ]
    info = json.loads(resp.envs["PCIDEVICE_INTEL_COM_ACCEL_INFO"])
    assert info["0000:30:00.0"]["accel"] == {"engine": "fake"}


def test_vf_count_change_without_restart(demo: Node, kubelet: KubeletStandIn, spawn: Any) -> None:
    worker = start(spawn, kubelet, NET, "--rescan-interval", "0.2")
    assert len(kubelet.devices(NET)) == 8
    demo.sysfs.set_num_vfs("0000:03:00.0", 2, vf_driver="iavf")
    assert kubelet.wait_for(lambda k: len(k.devices(NET)) == 6, 30), worker.log()
    assert "0000:04:00.3" not in ids(kubelet, NET)
    demo.sysfs.set_num_vfs("0000:03:00.0", 8, vf_driver="iavf")
    assert kubelet.wait_for(lambda k: len(k.devices(NET)) == 12, 30), worker.log()
    assert kubelet.allocate(NET, ["0000:04:00.7"]).envs
    assert len(kubelet.registrations) == 1 and worker.proc.poll() is None


def test_reregisters_after_kubelet_restart_without_bus(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    worker = start(spawn, kubelet, VFIO, "--heartbeat-interval", "0.2")
    first = kubelet.endpoint(VFIO)
    kubelet.restart()
    assert kubelet.wait_for(lambda k: listed(k, VFIO, 4) and k.endpoint(VFIO) != first, 30)
    assert worker.proc.poll() is None
    assert demo.sockets() == sorted(["kubelet.sock", kubelet.endpoint(VFIO) or ""])


def test_malformed_request_is_refused_and_sigterm_ends_streams_ok(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    """A request that does not parse: INTERNAL and one warning, the worker serves on. SIGTERM
    then ends every ListAndWatch stream with status OK (not cancelled, not UNAVAILABLE)."""
    worker = start(spawn, kubelet, VFIO)
    channel = grpc.insecure_channel(f"unix:{demo.plugin_dir / kubelet.endpoint(VFIO)}")  # type: ignore[operator]
    try:
        garbage = channel.unary_unary("/v1beta1.DevicePlugin/Allocate")
        with pytest.raises(grpc.RpcError) as err:
            garbage(b"\x0a\x05\x0a\xff", timeout=10)  # a length past the end of the message
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "v1beta1.AllocateRequest" in (err.value.details() or "")
        assert until(lambda: "refused a malformed request" in worker.log())
        stub = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
        call = stub.ListAndWatch(api_pb2.Empty())
        assert len(next(call).devices) == 4
        assert kubelet.allocate(VFIO, ["0000:04:00.4"]).envs  # still serving
        assert worker.terminate() == 0
        assert list(call) == []  # the stream ended: status OK, or this raises grpc.RpcError
        assert call.code() == grpc.StatusCode.OK
        assert "Traceback" not in worker.log() and "ERROR" not in worker.log()
    finally:
        channel.close()


def test_first_list_takes_link_health_from_sysfs(
    demo: Node, kubelet: KubeletStandIn, spawn: Any
) -> None:
    """No health monitor, no bus: a VF whose PF netdev sysfs shows down is Unhealthy in the very
    first list (the worker does not wait for link messages to be right)."""
    demo.sysfs.set_operstate("sim0pf1", "down")
    start(spawn, kubelet, VFIO)
    assert kubelet.lists_received(VFIO) >= 1
    health = {d.id: d.health for d in kubelet.devices(VFIO)}
    assert health == {
        "0000:04:00.4": "Healthy", "0000:04:00.5": "Healthy",
        "0000:05:00.4": "Unhealthy", "0000:05:00.5": "Unhealthy",
    }  # fmt: skip
