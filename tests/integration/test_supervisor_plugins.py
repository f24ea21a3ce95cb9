"""The supervisor with the real plugin workers against the kubelet stand-in (no root needed).

A pool worker killed with SIGKILL is serving and registered again while the other pools' open
ListAndWatch streams never end; a reload that leaves a pool unchanged leaves its stream alone too.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.simnode import demo_config, demo_node
from sriovdp.simnode.kubelet import KubeletStandIn
from tests.integration.test_supervisor_lifecycle import Supervisor, wait_until

pytestmark = pytest.mark.timeout(90)

NET, VFIO, UIO = (f"intel.com/{n}" for n in ("sriov_net_A", "sriov_vfio", "sriov_uio"))


class Stream:
    """A ListAndWatch stream of our own on one plugin's socket, read in a thread."""

    def __init__(self, socket: Path) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        stub = api_pb2_grpc.DevicePluginStub(self.channel)  # type: ignore[no-untyped-call]
        self.call = stub.ListAndWatch(api_pb2.Empty())
        self.lists = 0
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for _ in self.call:
                self.lists += 1
        except grpc.RpcError:
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, KubeletStandIn]]:
    demo_node(tmp_path / "sys")
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "plugins").mkdir()
    kubelet = KubeletStandIn(tmp_path / "plugins")
    yield tmp_path, kubelet
    kubelet.stop()


def start(base: Path, mode: str) -> Supervisor:
    args: tuple[str, ...] = ("--proc-root", str(base / "proc"))
    args += ("--devinfo-dir", str(base / "devinfo"), "--cdi-dir", str(base / "cdi"))
    return Supervisor(base, mode=mode, entry=None, args=args, config_text=json.dumps(demo_config()))


def replaced(sup: Supervisor, name: str, old_pid: int) -> Callable[[], bool]:
    """Once the supervisor shows ``name`` running under a pid other than ``old_pid``."""
    return lambda: sup.rows()[name]["pid"] not in (None, old_pid)


def all_up(k: KubeletStandIn) -> bool:
    alloc = k.allocatable()
    return len(alloc) == 3 and all(v > 0 for v in alloc.values())


@pytest.mark.parametrize("mode", ["zygote", "exec"])
def test_killed_pool_comes_back_while_other_streams_never_end(
    node: tuple[Path, KubeletStandIn], mode: str
) -> None:
    base, kubelet = node
    sup = start(base, mode)
    streams: list[Stream] = []
    try:
        assert kubelet.wait_for(all_up, 30), sup.log_text()
        rows = sup.wait_running()
        for resource in (VFIO, UIO):
            endpoint = kubelet.endpoint(resource)
            assert endpoint is not None
            streams.append(Stream(base / "plugins" / endpoint))
        wait_until(lambda: all(s.lists >= 1 for s in streams))
        kubelet_endpoints = {r: kubelet.endpoint(r) for r in (VFIO, UIO)}
        old_net = kubelet.endpoint(NET)

        os.kill(rows["intel-com_sriov_net_A"]["pid"], signal.SIGKILL)
        assert kubelet.wait_for(
            lambda k: k.endpoint(NET) != old_net and k.connected(NET) and all_up(k), 20
        )
        rows = sup.wait_running()
        assert rows["intel-com_sriov_net_A"]["restarts"] == 1
        assert rows["intel-com_sriov_net_A"]["registered"] is True
        assert not any(s.ended.is_set() for s in streams)
        assert {r: kubelet.endpoint(r) for r in (VFIO, UIO)} == kubelet_endpoints
        assert all(kubelet.connected(r) for r in (VFIO, UIO))
        for s in streams:
            s.close()
        assert sup.stop() == 0
        plugins = (base / "plugins").iterdir()
        left = [p.name for p in plugins if p.is_socket() and p.name != "kubelet.sock"]
        assert left == []  # every worker removed its socket (the kubelet's checkpoint stays)
    finally:
        for s in streams:
            s.close()
        if sup.proc.poll() is None:
            sup.proc.kill()
            sup.proc.wait()


def test_reload_updates_the_changed_pool_in_place(node: tuple[Path, KubeletStandIn]) -> None:
    """A pool whose own settings change takes them in place: same process, its stream and
    registration kept; the pools whose devices cannot change are not even told."""
    base, kubelet = node
    sup = start(base, "zygote")
    streams: list[Stream] = []
    try:
        assert kubelet.wait_for(all_up, 30), sup.log_text()
        before = {n: r["pid"] for n, r in sup.wait_running().items()}
        for resource in (VFIO, UIO):
            endpoint = kubelet.endpoint(resource)
            assert endpoint is not None
            streams.append(Stream(base / "plugins" / endpoint))
        wait_until(lambda: all(s.lists >= 1 for s in streams))
        registrations = len(kubelet.registrations)
        lists = {r: kubelet.lists_received(r) for r in (NET, VFIO, UIO)}
        config = demo_config()
        config["resourceList"][2]["allocationPolicy"] = "packed"  # sriov_uio changes
        sup.config.write_text(json.dumps(config))
        out = sup.cli("reload", "--run-dir", str(sup.run_dir))
        assert out.returncode == 0, out.stderr
        assert "updated in place: intel-com_sriov_uio" in out.stdout
        assert "intel-com_sriov_net_A, intel-com_sriov_vfio" in out.stdout.split("left alone:")[1]
        wait_until(lambda: "reload: new config applied in place" in sup.log_text())
        rows = sup.wait_running()
        assert {n: r["pid"] for n, r in rows.items()} == before
        assert all(r["restarts"] == 0 for r in rows.values())
        assert not any(s.ended.is_set() for s in streams)
        assert len(kubelet.registrations) == registrations
        assert kubelet.lists_received(NET) == lists[NET]
        assert kubelet.lists_received(VFIO) == lists[VFIO]
        assert kubelet.allocatable()[UIO] == 4
    finally:
        for s in streams:
            s.close()
        sup.stop()


def test_crashed_worker_restarts_with_the_accepted_config_not_the_edited_file(
    node: tuple[Path, KubeletStandIn],
) -> None:
    base, kubelet = node
    sup = start(base, "zygote")
    try:
        assert kubelet.wait_for(all_up, 30), sup.log_text()
        rows = sup.wait_running()
        # the operator breaks the file and never reloads; then a worker crashes
        sup.config.write_text('{"resourceList": [')
        os.kill(rows["intel-com_sriov_uio"]["pid"], signal.SIGKILL)
        wait_until(replaced(sup, "intel-com_sriov_uio", rows["intel-com_sriov_uio"]["pid"]))
        rows = sup.wait_running()
        assert rows["intel-com_sriov_uio"]["state"] == "RUNNING"
        assert kubelet.wait_for(all_up, 30)
        assert kubelet.allocatable()[UIO] == 4
    finally:
        sup.stop()


def test_reload_of_an_earlier_pool_changes_later_pools_only_through_their_devices(
    node: tuple[Path, KubeletStandIn],
) -> None:
    """The first matching pool owns a device, so an earlier pool's rules can change a later
    pool's devices: the later pools re-discover in place, and one whose devices came out the
    same sends nothing; nobody restarts or registers again."""
    base, kubelet = node
    sup = start(base, "zygote")
    try:
        assert kubelet.wait_for(all_up, 30), sup.log_text()
        before = {n: r["pid"] for n, r in sup.wait_running().items()}
        registrations = len(kubelet.registrations)
        vfio_lists = kubelet.lists_received(VFIO)
        config = demo_config()
        config["resourceList"][0]["rootDevices"] = ["03:00.0"]  # the legacy pool narrows
        sup.config.write_text(json.dumps(config))
        out = sup.cli("reload", "--run-dir", str(sup.run_dir))
        assert out.returncode == 0, out.stderr
        assert "updated in place: intel-com_sriov_net_A, intel-com_sriov_vfio" in out.stdout
        assert kubelet.wait_for(lambda k: k.allocatable().get(NET) == 4, 30), sup.log_text()
        rows = sup.wait_running()
        assert {n: r["pid"] for n, r in rows.items()} == before
        assert len(kubelet.registrations) == registrations
        assert kubelet.lists_received(VFIO) == vfio_lists  # its devices did not change
        assert kubelet.allocatable()[VFIO] == 4 and kubelet.allocatable()[UIO] == 4
    finally:
        sup.stop()
