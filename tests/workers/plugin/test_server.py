"""The worker's gRPC server in this process (sriovdp.workers.plugin.server, .servicer: grpc.aio on
an event loop in a thread), with grpcio's synchronous clients as the kubelet: concurrent
ListAndWatch streams woken from other threads, a departing client, re-serving on a fresh socket,
refusal codes, malformed and oversized requests, stop, and a loop that idles without waking."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.shared.messages import LinkState
from sriovdp.shared.model import PoolDevice
from sriovdp.workers.plugin.allocation import AllocationTable
from sriovdp.workers.plugin.devinfo import DevInfoWriter
from sriovdp.workers.plugin.drivers import DriverContext
from sriovdp.workers.plugin.server import EventLoopThread, PluginServer
from sriovdp.workers.plugin.servicer import DevicePluginServicer
from sriovdp.workers.plugin.state import PoolState
from tests.workers.plugin.factories import pool, vf

CHILD = "example-com_net"


def until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Stream:
    """One ListAndWatch client, read in a thread: every list as {id: health}, then how it ended."""

    def __init__(self, path: Path) -> None:
        self.channel = grpc.insecure_channel(f"unix:{path}")
        stub = api_pb2_grpc.DevicePluginStub(self.channel)  # type: ignore[no-untyped-call]
        self.call = stub.ListAndWatch(api_pb2.Empty())
        self.lists: list[dict[str, str]] = []
        self.ended: str | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.lists.append({d.ID: d.health for d in resp.devices})
            self.ended = "OK"
        except grpc.RpcError as exc:
            self.ended = exc.code().name

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


class Served:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.devices = [vf(0, 0), vf(0, 1), vf(1, 0)]
        p = pool()

        def build(devs: Iterable[PoolDevice]) -> AllocationTable:
            return AllocationTable(p, devs, DriverContext(Path("/nonexistent")))

        self.state = PoolState(p, self.devices, build)
        self.servicer = DevicePluginServicer(self.state, DevInfoWriter(base / "devinfo"))
        self.loop = EventLoopThread()
        self.server = PluginServer(base / "dp", CHILD, self.servicer, self.loop)
        self.streams: list[Stream] = []

    def close(self) -> None:
        """Ends the test's streams, the state, the server and the loop; removes the temp dir."""
        for stream in self.streams:
            stream.close()
        self.state.close()
        self.server.stop(grace=0.2)
        self.loop.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def stream(self) -> Stream:
        assert self.server.current is not None
        s = Stream(self.server.current.path)
        self.streams.append(s)
        return s

    def link(self, name: str, up: bool) -> None:
        """A LinkState applied from a thread of its own (as the bus thread does)."""
        t = threading.Thread(
            target=self.state.apply_link,
            args=(LinkState(name, 3, "UP" if up else "DOWN", up, True),),
        )
        t.start()
        t.join()


@pytest.fixture
def served() -> Iterator[Served]:
    base = Path(tempfile.mkdtemp(prefix="srv", dir="/tmp"))  # unix socket paths stay short
    s = Served(base)
    s.server.start()
    try:
        yield s
    finally:
        s.close()


def health(served: Served, **by_pf: str) -> dict[str, str]:
    return {d.id: by_pf.get(d.function.pf_name or "", "Healthy") for d in served.devices}


def test_every_stream_gets_the_list_then_every_change(served: Served) -> None:
    streams = [served.stream() for _ in range(3)]
    first = health(served)
    assert until(lambda: all(s.lists == [first] for s in streams))
    assert until(lambda: served.servicer.open_streams == 3)
    served.link("pf0", up=False)
    down = health(served, pf0="Unhealthy")
    assert until(lambda: all(s.lists == [first, down] for s in streams))
    served.link("pf1", up=True)  # no health change: no list
    served.link("pf0", up=True)
    assert until(lambda: all(s.lists == [first, down, first] for s in streams))


def test_departing_client_releases_its_stream_at_once(served: Served) -> None:
    streams = [served.stream() for _ in range(3)]
    assert until(lambda: served.servicer.open_streams == 3)
    streams[0].close()
    assert until(lambda: served.servicer.open_streams == 2)
    served.link("pf1", up=False)
    assert until(lambda: all(len(s.lists) == 2 for s in streams[1:]))
    assert len(streams[0].lists) == 1


def test_reserving_on_a_fresh_socket_keeps_devices_and_health(served: Served) -> None:
    old = served.server.current
    assert old is not None
    before = served.stream()
    served.link("pf0", up=False)
    down = health(served, pf0="Unhealthy")
    assert until(lambda: before.lists[-1:] == [down])
    new = served.server.start()
    assert new.path != old.path and new.path.is_socket() and not old.path.exists()
    assert until(lambda: before.ended is not None)  # the old server is stopped
    after = served.stream()
    assert until(lambda: after.lists == [down])
    assert until(lambda: served.servicer.open_streams == 1)
    served.link("pf0", up=True)
    assert until(lambda: after.lists == [down, health(served)])


def test_allocate_and_refusal_codes(served: Served) -> None:
    assert served.server.current is not None
    with grpc.insecure_channel(f"unix:{served.server.current.path}") as channel:
        stub: Any = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
        dev = served.devices[0].id

        def request(*ids: str) -> api_pb2.AllocateRequest:
            creq = api_pb2.ContainerAllocateRequest(devices_ids=list(ids))
            return api_pb2.AllocateRequest(container_requests=[creq])

        resp = stub.Allocate(request(dev), timeout=10)
        assert dev in resp.container_responses[0].envs["PCIDEVICE_EXAMPLE_COM_NET"]
        with pytest.raises(grpc.RpcError) as err:
            stub.Allocate(request("0000:99:00.0"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "0000:99:00.0" in (err.value.details() or "")
        assert served.servicer.allocations == 1 and served.servicer.refused == 1
        served.link("pf0", up=False)  # after the kubelet chose it: allocated all the same
        resp = stub.Allocate(request(dev), timeout=10)
        assert dev in resp.container_responses[0].envs["PCIDEVICE_EXAMPLE_COM_NET"]
        assert served.servicer.allocations == 2 and served.servicer.unhealthy_allocations == 1
        assert served.servicer.counters.snapshot().unhealthy_requests == 1
        opts = stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=10)
        assert opts.get_preferred_allocation_available


def test_stop_ends_streams_and_removes_the_socket(served: Served) -> None:
    streams = [served.stream() for _ in range(2)]
    assert until(lambda: served.servicer.open_streams == 2)
    cur = served.server.current
    assert cur is not None
    served.state.close()
    assert until(lambda: all(s.ended == "OK" for s in streams))  # ended by us, not cancelled
    served.server.stop(grace=0.2)
    assert not cur.path.exists() and served.servicer.open_streams == 0


def allocate_request(*ids: str) -> api_pb2.AllocateRequest:
    creq = api_pb2.ContainerAllocateRequest(devices_ids=list(ids))
    return api_pb2.AllocateRequest(container_requests=[creq])


def test_malformed_and_oversized_requests_are_refused_and_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no AllocateRequest: INTERNAL naming the type, one warning, no traceback
    (grpcio alone answers UNKNOWN and logs one blaming the servicer); the servicer never sees
    them. Over 4 MiB: grpcio's RESOURCE_EXHAUSTED. The server serves on."""
    assert served.server.current is not None
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(f"unix:{served.server.current.path}") as channel:
        for method in ("Allocate", "ListAndWatch"):
            path = f"/v1beta1.DevicePlugin/{method}"
            raw = (channel.unary_stream if method == "ListAndWatch" else channel.unary_unary)(path)
            with pytest.raises(grpc.RpcError) as err:
                answer = raw(b"\xff\xff\xff", timeout=10)
                if method == "ListAndWatch":
                    list(answer)
            assert err.value.code() == grpc.StatusCode.INTERNAL, method
            assert "cannot parse the request" in (err.value.details() or "")
        assert "v1beta1.AllocateRequest" in caplog.text and "v1beta1.Empty" in caplog.text
        warnings = [r for r in caplog.records if "refused a malformed request" in r.getMessage()]
        assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
        assert not any(r.exc_info for r in caplog.records)
        assert served.servicer.open_streams == 0 and served.servicer.refused == 0
        stub: Any = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as err:
            stub.Allocate(allocate_request("x" * (4 * 1024 * 1024)), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        dev = served.devices[0].id
        assert stub.Allocate(allocate_request(dev), timeout=10).container_responses[0].envs


def test_start_on_an_impossible_path_names_it(served: Served) -> None:
    broken = PluginServer(served.base / "a-file", CHILD, served.servicer, served.loop)
    (served.base / "a-file").write_text("not a directory")
    with pytest.raises(OSError, match="a-file"):
        broken.start()
    assert broken.current is None
    assert served.stream() and until(lambda: served.servicer.open_streams == 1)  # unharmed


def test_an_idle_loop_does_not_wake_with_streams_open(served: Served) -> None:
    """No timer and no polling of ours: the loop thread is not scheduled once while streams sit
    idle, and the only Python threads serving added are the loop and grpc.aio's poller (which
    blocks in C-core without a deadline)."""
    streams = [served.stream() for _ in range(3)]
    assert until(lambda: all(len(s.lists) == 1 for s in streams))
    time.sleep(0.3)  # let the HTTP/2 chatter after the first lists settle
    tid = served.loop._thread.native_id
    stat = Path(f"/proc/self/task/{tid}/schedstat")
    before = stat.read_text().split()
    time.sleep(2.0)
    after = stat.read_text().split()
    assert after[2] == before[2], "the loop thread ran while idle"  # timeslices run
    served.link("pf0", up=False)
    assert until(lambda: all(len(s.lists) == 2 for s in streams))
    assert int(stat.read_text().split()[2]) > int(after[2])  # the probe sees activity
    ours = {t.name for t in threading.enumerate() if t.name.startswith("grpc-loop")}
    pollers = [
        t
        for t in threading.enumerate()
        if getattr(getattr(t, "_target", None), "__name__", "") == "_poll_wrapper"
    ]
    assert ours == {"grpc-loop"} and len(pollers) >= 1
