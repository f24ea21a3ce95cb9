"""Our gRPC server (sriovdp.workers.grpcwire.server, .connection) against grpcio's client: every
DevicePlugin RPC, streaming, flow control with large messages, many concurrent streams,
cancellation, statuses, deadlines, stop, and an idle loop that does nothing."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.workers.grpcwire.methods import Method, service_methods
from sriovdp.workers.grpcwire.server import Server
from tests.workers.grpcwire.conftest import MAX_RECEIVE, SERVICE, Served, TestServicer, listing

pytestmark = pytest.mark.timeout(90)


def allocate(*ids: str) -> api_pb2.AllocateRequest:
    return api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=list(ids))]
    )


def rpc_error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value


class Reader:
    """A grpcio ListAndWatch stream read in a thread: every list, then how it ended."""

    def __init__(self, served: Served, channel: grpc.Channel | None = None) -> None:
        ch = channel or served.channel()
        stub: Any = api_pb2_grpc.DevicePluginStub(ch)  # type: ignore[no-untyped-call]
        self.call = stub.ListAndWatch(api_pb2.Empty())
        self.lists: list[api_pb2.ListAndWatchResponse] = []
        self.ended: grpc.StatusCode | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.lists.append(resp)
            self.ended = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.ended = exc.code()
        finally:
            self.done.set()

    def until(self, count: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.lists) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return len(self.lists) >= count


def test_every_device_plugin_rpc(served: Served) -> None:
    stub = served.stub()
    opts = stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=10)
    assert opts.get_preferred_allocation_available and not opts.pre_start_required
    resp = stub.Allocate(allocate("0000:01:00.1", "0000:01:00.2"), timeout=10)
    assert resp.container_responses[0].envs["IDS"] == "0000:01:00.1,0000:01:00.2"
    pref = stub.GetPreferredAllocation(
        api_pb2.PreferredAllocationRequest(
            container_requests=[
                api_pb2.ContainerPreferredAllocationRequest(
                    available_deviceIDs=["a", "b", "c"], allocation_size=2
                )
            ]
        ),
        timeout=10,
    )
    assert list(pref.container_responses[0].deviceIDs) == ["c", "b"]
    assert stub.PreStartContainer(api_pb2.PreStartContainerRequest(), timeout=10) == (
        api_pb2.PreStartContainerResponse()
    )
    stream = Reader(served)
    assert stream.until(1)
    assert stream.lists == [served.servicer.initial]


def test_list_and_watch_streams_every_update_then_ends_ok(served: Served) -> None:
    stream = Reader(served)
    assert stream.until(1)
    updates = [listing(i + 1, tag=f"-{i}") for i in range(5)]
    for update in updates:
        served.servicer.push(update)
    assert stream.until(6)
    served.servicer.push(None)
    assert stream.done.wait(30)
    assert stream.ended == grpc.StatusCode.OK
    assert stream.lists == [served.servicer.initial, *updates]
    assert served.rec.wait(lambda: ("ListAndWatch", "returned") in served.rec.finished)


def test_a_4096_device_list_crosses_the_flow_control_windows(served: Served) -> None:
    big = listing(4096)
    size = big.ByteSize()
    assert size > 65535  # over grpc's initial stream window (the kubelet's has ~300 KB)
    streams = [Reader(served) for _ in range(3)]  # a channel (connection) each
    assert all(s.until(1) for s in streams)
    for i in range(3):
        served.servicer.push(listing(4096, tag=f"-{i}"))
    assert all(s.until(4, timeout=60) for s in streams)
    for s in streams:
        assert [len(r.devices) for r in s.lists] == [3, 4096, 4096, 4096]
        assert s.lists[3] == listing(4096, tag="-2")


def test_a_large_unary_answer_and_many_streams_on_one_connection(served: Served) -> None:
    channel = served.channel()
    streams = [Reader(served, channel) for _ in range(40)]
    assert all(s.until(1) for s in streams)
    stub: Any = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
    resp = stub.Allocate(allocate("big:500000"), timeout=30)  # 500 KB: over every window
    assert len(resp.container_responses[0].envs["BIG"]) == 500_000
    served.servicer.push(listing(2000))
    assert all(s.until(2, timeout=60) for s in streams)
    assert all(len(s.lists[1].devices) == 2000 for s in streams)


def test_many_concurrent_unary_calls(served: Served) -> None:
    stubs = [served.stub() for _ in range(4)]

    def one(i: int) -> str:
        stub = stubs[i % len(stubs)]
        resp = stub.Allocate(allocate(f"dev-{i}", "sleep:0.05"), timeout=30)
        return str(resp.container_responses[0].envs["IDS"])

    with futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(200)))
    assert answers == [f"dev-{i},sleep:0.05" for i in range(200)]


def test_a_client_cancelling_its_stream_cancels_the_handler(served: Served) -> None:
    streams = [Reader(served) for _ in range(3)]
    assert all(s.until(1) for s in streams)
    streams[0].call.cancel()
    assert served.rec.wait(lambda: ("ListAndWatch", "cancelled") in served.rec.finished, 10)
    assert len(served.rec.finished) == 1  # only that one
    served.servicer.push(listing(1))
    assert streams[1].until(2) and streams[2].until(2)


def test_a_client_cancelling_a_unary_call_cancels_the_handler(served: Served) -> None:
    future = served.stub().Allocate.future(allocate("sleep:60"))
    assert served.rec.wait(lambda: "sleep:60" in served.rec.started, 10)
    future.cancel()
    assert served.rec.wait(lambda: ("sleep:60", "cancelled") in served.rec.finished, 10)


def test_a_client_that_disconnects_cancels_its_handlers(served: Served) -> None:
    channel = served.channel()
    streams = [Reader(served, channel) for _ in range(2)]
    assert all(s.until(1) for s in streams)
    channel.close()
    assert served.rec.wait(
        lambda: served.rec.finished.count(("ListAndWatch", "cancelled")) == 2, 10
    )


@pytest.mark.parametrize(
    "code,details",
    [
        ("FAILED_PRECONDITION", "device 0000:01:00.1 is unhealthy"),
        ("INVALID_ARGUMENT", "unknown device 'x'"),
        ("NOT_FOUND", "100% gone"),
        ("RESOURCE_EXHAUSTED", "Gerät belegt: ½ → ∅, 设备 ✓"),
        ("PERMISSION_DENIED", "tab\tand newline\nin details"),
    ],
)
def test_abort_codes_and_details_reach_the_client(served: Served, code: str, details: str) -> None:
    err = rpc_error(served.stub().Allocate, allocate(f"abort:{code}:{details}"), timeout=10)
    assert err.code() == getattr(grpc.StatusCode, code)
    assert err.details() == details


def test_a_failing_handler_answers_unknown_and_the_server_goes_on(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    stub = served.stub()
    err = rpc_error(stub.Allocate, allocate("raise"), timeout=10)
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert "RuntimeError" in (err.details() or "")
    assert any(r.exc_info and "failed on purpose" in str(r.exc_info[1]) for r in caplog.records)
    resp = stub.Allocate(allocate("after"), timeout=10)
    assert resp.container_responses[0].envs["IDS"] == "after"


def test_unknown_method_is_unimplemented(served: Served) -> None:
    channel = served.channel()
    for path in ("/v1beta1.DevicePlugin/Nope", "/other.Service/Allocate", "/x"):
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        err = rpc_error(call, b"", timeout=10)
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED, path
        assert path in (err.details() or "")


def test_a_deadline_cancels_the_handler(served: Served) -> None:
    t0 = time.monotonic()
    err = rpc_error(served.stub().Allocate, allocate("sleep:30"), timeout=0.3)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 5
    # the server honoured grpc-timeout: the handler was cancelled, not left to sleep
    assert served.rec.wait(lambda: ("sleep:30", "cancelled") in served.rec.finished, 5)


def test_oversized_and_malformed_requests(served: Served) -> None:
    stub = served.stub()
    err = rpc_error(stub.Allocate, allocate("x" * MAX_RECEIVE), timeout=10)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_RECEIVE) in (err.details() or "")
    raw = served.channel().unary_unary(
        "/v1beta1.DevicePlugin/Allocate", request_serializer=None, response_deserializer=None
    )
    err = rpc_error(raw, b"\xff\xff\xff", timeout=10)  # no protobuf
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "v1beta1.AllocateRequest" in (err.details() or "")
    err = rpc_error(stub.Allocate, allocate("y"), timeout=10, compression=grpc.Compression.Gzip)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert stub.Allocate(allocate("fine"), timeout=10).container_responses[0].envs["IDS"] == "fine"


def test_stop_ends_open_streams_and_the_clients_see_it(served: Served) -> None:
    streams = [Reader(served) for _ in range(3)]
    assert all(s.until(1) for s in streams)
    served.call(served.server.stop(grace=0.2))
    assert all(s.done.wait(10) for s in streams)
    assert {s.ended for s in streams} == {grpc.StatusCode.UNAVAILABLE}
    assert served.rec.wait(
        lambda: served.rec.finished.count(("ListAndWatch", "cancelled")) == 3, 10
    )
    assert served.path.is_socket()  # left to the caller
    err = rpc_error(served.stub().GetDevicePluginOptions, api_pb2.Empty(), timeout=5)
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_stop_lets_running_calls_finish_within_the_grace(served: Served) -> None:
    future = served.stub().Allocate.future(allocate("sleep:0.3"))
    assert served.rec.wait(lambda: "sleep:0.3" in served.rec.started, 10)
    served.call(served.server.stop(grace=10))
    assert future.result(10).container_responses[0].envs["IDS"] == "sleep:0.3"


def test_an_idle_server_with_open_streams_does_nothing(served: Served) -> None:
    """No timer, no polling: the loop thread is not scheduled once while streams sit idle."""
    streams = [Reader(served) for _ in range(4)]
    assert all(s.until(1) for s in streams)
    time.sleep(0.3)  # let the HTTP/2 chatter after the first lists settle (acks, BDP pings)
    stat = Path(f"/proc/self/task/{served.loop_tid}/schedstat")
    before = stat.read_text().split()
    time.sleep(2.0)
    after = stat.read_text().split()
    assert after[2] == before[2], "the loop thread ran while idle"  # timeslices run
    served.servicer.push(listing(2))
    assert all(s.until(2) for s in streams)
    assert int(stat.read_text().split()[2]) > int(after[2])  # the probe sees activity


def test_start_on_an_impossible_path_names_it(base: Path, served: Served) -> None:
    bad = base / "missing-dir" / "x.sock"
    server = Server(service_methods(SERVICE, served.servicer))
    with pytest.raises(OSError, match="missing-dir"):
        served.call(server.start(bad))


def test_method_tables_are_checked() -> None:
    class Incomplete:
        async def Allocate(self, request: Any, context: Any) -> Any:
            return None

    with pytest.raises(ValueError, match="GetDevicePluginOptions"):
        service_methods(SERVICE, Incomplete())
    with pytest.raises(ValueError, match="path"):
        Method("Allocate", api_pb2.AllocateRequest, False, Incomplete().Allocate)
    servicer = TestServicer.__new__(TestServicer)
    methods = service_methods(SERVICE, servicer)
    table = [(m.path, m.request_class.DESCRIPTOR.name, m.server_streaming) for m in methods]
    assert table == [
        ("/v1beta1.DevicePlugin/GetDevicePluginOptions", "Empty", False),
        ("/v1beta1.DevicePlugin/ListAndWatch", "Empty", True),
        ("/v1beta1.DevicePlugin/GetPreferredAllocation", "PreferredAllocationRequest", False),
        ("/v1beta1.DevicePlugin/Allocate", "AllocateRequest", False),
        ("/v1beta1.DevicePlugin/PreStartContainer", "PreStartContainerRequest", False),
    ]
    with pytest.raises(ValueError, match="twice"):
        Server([methods[0], methods[0]])


def test_a_long_lived_connection_keeps_bounded_state(served: Served) -> None:
    """h2 remembers closed streams; on a connection that lives for months of calls (the
    kubelet's) that memory stays bounded, and late frames on recent streams are still fine."""
    stub = served.stub()
    for _ in range(1500):
        stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=10)
    (conn,) = served.server.connections
    assert len(conn.streams) == 0
    assert 0 < len(conn.h2._closed_streams) <= 1024
    assert (
        stub.Allocate(allocate("still"), timeout=10).container_responses[0].envs["IDS"] == "still"
    )
