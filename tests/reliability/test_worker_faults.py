"""One real plugin worker under load, with a full or read-only device-info dir, bad gRPC input
and a partly broken sysfs tree (kubelet stand-in, bus broker in a thread, fake sysfs)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.shared.messages import LinkState
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.harness.broker import BrokerThread
from tests.workers.plugin.conftest import Node
from tests.workers.plugin.test_worker import CHILD, NET, UIO, VFIO, listed, until

pytestmark = pytest.mark.timeout(90)

CONCURRENCY_SECONDS = float(os.environ.get("SRIOV_DP_CONCURRENCY_SECONDS", "5"))
CLIENTS = 16
PF0_VFS = [f"0000:04:00.{i}" for i in range(4)]  # the iavf VFs of sim0pf0 (pool NET)


def start(spawn: Any, kubelet: KubeletStandIn, node: Node, resource: str, *args: str) -> Any:
    worker = spawn(CHILD[resource], "--run-dir", str(node.run_dir), *args)
    assert kubelet.wait_for(lambda k: listed(k, resource), 30), worker.log()
    return worker


def direct_stub(node: Node, kubelet: KubeletStandIn, resource: str) -> Any:
    channel = grpc.insecure_channel(f"unix:{node.plugin_dir / str(kubelet.endpoint(resource))}")
    return channel, api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]


def last_is(lists: list[set[str]], want: set[str]) -> bool:
    return bool(lists) and lists[-1] == want


def unhealthy_is(k: KubeletStandIn, want: set[str]) -> bool:
    return {d.id for d in k.devices(NET) if d.health != "Healthy"} == want


def logged(worker: Any, line: str) -> bool:
    return line in worker.log()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def test_sixteen_clients_allocate_and_prefer_while_health_changes(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    worker = start(spawn, kubelet, demo, NET)
    stop = threading.Event()
    errors: list[str] = []
    latencies: dict[str, list[float]] = {"Allocate": [], "GetPreferredAllocation": []}
    lock = threading.Lock()

    def client(n: int) -> None:
        channel, stub = direct_stub(demo, kubelet, NET)
        i = n
        try:
            while not stop.is_set():
                i += 1
                ids = [PF0_VFS[(i + j) % 4] for j in range(1 + i % 4)]
                alloc = api_pb2.AllocateRequest(
                    container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids)]
                )
                pref = api_pb2.PreferredAllocationRequest(
                    container_requests=[
                        api_pb2.ContainerPreferredAllocationRequest(
                            available_deviceIDs=PF0_VFS,
                            must_include_deviceIDs=ids[:1],
                            allocation_size=2,
                        )
                    ]
                )
                calls: tuple[tuple[str, Any, Any], ...] = (
                    ("Allocate", stub.Allocate, alloc),
                    ("GetPreferredAllocation", stub.GetPreferredAllocation, pref),
                )
                for name, call, req in calls:
                    t0 = time.perf_counter()
                    try:
                        resp = call(req, timeout=10)
                    except grpc.RpcError as exc:
                        with lock:
                            errors.append(f"{name} {ids}: {exc.code().name} {exc.details()}")
                        continue
                    dt = time.perf_counter() - t0
                    if name == "GetPreferredAllocation":
                        got = list(resp.container_responses[0].deviceIDs)
                        if len(got) != 2 or ids[0] not in got:
                            with lock:
                                errors.append(f"preferred {ids[:1]} -> {got}")
                    with lock:
                        latencies[name].append(dt)
        finally:
            channel.close()

    # a second ListAndWatch stream of our own, besides the stand-in's
    channel, stub = direct_stub(demo, kubelet, NET)
    lists: list[set[str]] = []
    cond = threading.Condition()
    stream = stub.ListAndWatch(api_pb2.Empty())

    def watch() -> None:
        with contextlib.suppress(grpc.RpcError):
            for resp in stream:
                unhealthy = {d.ID for d in resp.devices if d.health != "Healthy"}
                with cond:
                    lists.append(unhealthy)
                    cond.notify_all()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    # flip sim0pf1 (whose VFs nobody allocates) while the load runs: both streams must follow
    deadline = time.monotonic() + CONCURRENCY_SECONDS
    flips = 0
    pf1 = {f"0000:05:00.{i}" for i in range(4)}
    try:
        while time.monotonic() < deadline:
            down = flips % 2 == 0
            broker.publish(LinkState("sim0pf1", 9, "DOWN" if down else "UP", not down, True))
            want: set[str] = pf1 if down else set()
            with cond:
                assert cond.wait_for(functools.partial(last_is, lists, want), 30), (
                    f"own stream stalled at flip {flips}: {lists[-1:]}"
                )
            assert kubelet.wait_for(
                functools.partial(unhealthy_is, want=want),
                15,
            ), f"stand-in stream stalled at flip {flips}"
            flips += 1
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        stream.cancel()
        channel.close()
    print(f"\n{CLIENTS} clients, {CONCURRENCY_SECONDS:.0f} s, {flips} health flips on both streams")
    for name, values in latencies.items():
        ms = [v * 1000 for v in values]
        print(
            f"  {name}: {len(ms)} calls, p50 {statistics.median(ms):.2f} ms, "
            f"p99 {pct(ms, 99):.2f} ms, max {max(ms):.2f} ms"
        )
    assert errors == []
    assert all(latencies.values()) and flips >= 2
    assert worker.proc.poll() is None


@contextlib.contextmanager
def tiny_tmpfs() -> Iterator[Path]:
    """A 64 KiB tmpfs in a temp dir (root only), unmounted afterwards."""
    where = Path(tempfile.mkdtemp(prefix="sdptmpfs", dir="/tmp"))
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(where, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def fill(directory: Path) -> None:
    """Writes until ENOSPC."""
    with contextlib.suppress(OSError), (directory / "filler").open("wb") as f:
        while True:
            f.write(b"x" * 4096)
            f.flush()


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_devinfo_dir_full_or_read_only(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any, fault: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tiny tmpfs (the unwritable-path case is in test_worker)")
    with tiny_tmpfs() as mnt:
        devinfo = mnt / "devinfo"
        devinfo.mkdir()
        if fault == "full":
            fill(mnt)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        worker = start(spawn, kubelet, demo, VFIO, "--devinfo-dir", str(devinfo))
        for n, vf in enumerate(["0000:04:00.4", "0000:04:00.5", "0000:05:00.4"], 1):
            resp = kubelet.allocate(VFIO, [vf])
            assert resp.envs["PCIDEVICE_INTEL_COM_SRIOV_VFIO"] == vf
            line = f"device-info not written ({n} failures so far)"
            assert until(functools.partial(logged, worker, line)), worker.log()
        assert "No space left" in worker.log() or "Read-only" in worker.log(), worker.log()
        assert list(devinfo.iterdir()) == []
        assert worker.proc.poll() is None
        assert worker.terminate() == 0


def test_grpc_bad_input_gets_a_status_or_a_safe_answer(
    demo: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    worker = start(spawn, kubelet, demo, VFIO)
    start(spawn, kubelet, demo, UIO)
    vfio = ["0000:04:00.4", "0000:04:00.5", "0000:05:00.4", "0000:05:00.5"]
    uio_id = "0000:04:00.6"  # a device of another pool
    stub = kubelet.stub(VFIO)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    bad_allocs: list[list[list[str]]] = [
        [],
        [[]],
        [[uio_id]],
        [[vfio[0], uio_id]],
        [[vfio[0], vfio[0]]],
        [[f"0000:aa:{i // 8 % 32:02x}.{i % 8}" for i in range(5000)]],
        [[vfio[0]] * 3000],
        [["q" * 1_000_000]],
        [[vfio[0]], [uio_id]],
    ]
    for containers in bad_allocs:
        req = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=c) for c in containers]
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.Allocate(req, timeout=10)
        assert err.value.code() == invalid, (containers[:1], err.value.details())
        assert len(err.value.details() or "") < 400
    # nothing was written for any refused request
    assert not demo.devinfo_dir.exists() or list(demo.devinfo_dir.iterdir()) == []

    cases: list[tuple[list[str], list[str], int]] = [
        (vfio, [], -1),
        (vfio, [], -(2**31)),
        (vfio, [], 2**31 - 1),
        (vfio, [], 0),
        (vfio, [], 5),  # more than available
        (vfio, [uio_id], 1),  # must_include not available (and of another pool)
        (vfio[:2], vfio[2:], 2),  # must_include outside available
        ([], [], 2),
        (["garbage", "x" * 100_000], ["garbage"], 1),
        (vfio * 1000, vfio, 4),
    ]
    for available, must, size in cases:
        preq = api_pb2.PreferredAllocationRequest(
            container_requests=[
                api_pb2.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available,
                    must_include_deviceIDs=must,
                    allocation_size=size,
                )
            ]
        )
        try:
            resp = stub.GetPreferredAllocation(preq, timeout=10)
        except grpc.RpcError as exc:  # a proper status is acceptable too
            assert exc.code() != grpc.StatusCode.UNKNOWN, exc.details()
            continue
        got = list(resp.container_responses[0].deviceIDs)
        # safe: only devices of this pool that were offered, no duplicates, never too many
        assert set(got) <= set(vfio) & set(available), (available[:3], must, size, got)
        assert len(got) == len(set(got)) and len(got) <= max(size, 0)
    assert worker.proc.poll() is None
    assert kubelet.allocate(VFIO, [vfio[0]]).envs  # still serving
    assert "Traceback" not in worker.log()


def test_broken_sysfs_entries_leave_the_other_devices_served(
    node: Node, kubelet: KubeletStandIn, broker: BrokerThread, spawn: Any
) -> None:
    from sriovdp.simnode import demo_config, demo_node

    sysfs = demo_node(node.sysfs.root)
    node.write_config(demo_config())
    # VF 1 of sim0pf0: garbage NUMA node; VF 2: driver link dangling; VF 3: iommu_group loop
    (sysfs.device_dir("0000:04:00.1") / "numa_node").write_text("banana\n")
    drv = sysfs.device_dir("0000:04:00.2") / "driver"
    drv.unlink()
    drv.symlink_to("../../../bus/pci/drivers/does-not-exist")
    grp = sysfs.device_dir("0000:04:00.3") / "iommu_group"
    grp.unlink()
    grp.symlink_to("iommu_group")
    worker = spawn(CHILD[NET], "--run-dir", str(node.run_dir))
    assert kubelet.wait_for(lambda k: listed(k, NET), 30), worker.log()
    ids = {d.id for d in kubelet.devices(NET)}
    good = {"0000:04:00.0"} | {f"0000:05:00.{i}" for i in range(4)}
    assert good <= ids, (sorted(ids), worker.log())
    for vf in sorted(good):
        assert kubelet.allocate(NET, [vf]).envs["PCIDEVICE_INTEL_COM_SRIOV_NET_A"] == vf
    assert worker.proc.poll() is None
    print(f"\nlisted {sorted(ids)}")
