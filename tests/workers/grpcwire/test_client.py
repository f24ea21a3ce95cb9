"""Our unary client (sriovdp.workers.grpcwire.client) against grpcio servers: success, error
statuses, a missing socket, a server that never answers, a server that dies mid-call; and
against our own server (both ends ours, non-ASCII details both ways)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.workers.grpcwire.client import USER_AGENT, unary_call
from sriovdp.workers.grpcwire.status import RpcError, StatusCode
from tests.workers.grpcwire.conftest import Served

pytestmark = pytest.mark.timeout(90)

REGISTER = "/v1beta1.Registration/Register"
REPO = Path(__file__).resolve().parents[3]


class Kubelet(api_pb2_grpc.RegistrationServicer):
    """Register by endpoint name: ``abort-<CODE>`` aborts with the version as details,
    ``hang`` waits until the client leaves; anything else succeeds."""

    def __init__(self) -> None:
        self.requests: list[api_pb2.RegisterRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.left = threading.Event()

    def Register(self, request: api_pb2.RegisterRequest, context: Any) -> api_pb2.Empty:
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        if request.endpoint.startswith("abort-"):
            context.abort(getattr(grpc.StatusCode, request.endpoint[6:]), request.version)
        if request.endpoint == "hang":
            gone = threading.Event()
            context.add_callback(gone.set)
            gone.wait(60)
            self.left.set()
        return api_pb2.Empty()


@pytest.fixture
def kubelet(base: Path) -> Iterator[tuple[Path, Kubelet]]:
    servicer = Kubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_RegistrationServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    path = base / "kubelet.sock"
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield path, servicer
    finally:
        server.stop(0).wait(5)


def register(path: Path, endpoint: str, timeout: float = 10.0, version: str = "v1beta1") -> Any:
    request = api_pb2.RegisterRequest(version=version, endpoint=endpoint, resource_name="a.b/c")
    return asyncio.run(unary_call(path, REGISTER, request, api_pb2.Empty, timeout))


def failure(path: Path, endpoint: str, timeout: float = 10.0, **kw: Any) -> RpcError:
    with pytest.raises(RpcError) as err:
        register(path, endpoint, timeout, **kw)
    return err.value


def test_success_sends_what_grpc_servers_expect(kubelet: tuple[Path, Kubelet]) -> None:
    path, servicer = kubelet
    assert register(path, "x.sock") == api_pb2.Empty()
    assert servicer.requests[0].endpoint == "x.sock"
    assert servicer.requests[0].resource_name == "a.b/c"
    assert USER_AGENT in servicer.metadata[0]["user-agent"]
    for _ in range(20):  # one connection per call, each closed after it
        register(path, "again.sock")
    assert len(servicer.requests) == 21


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "FAILED_PRECONDITION", "UNAVAILABLE"])
def test_server_error_statuses_are_propagated(kubelet: tuple[Path, Kubelet], code: str) -> None:
    path, _ = kubelet
    err = failure(path, f"abort-{code}", version="version 2 wird nicht unterstützt: 100% ✗")
    assert err.code == StatusCode[code]
    assert err.details == "version 2 wird nicht unterstützt: 100% ✗"


def test_unknown_method_is_unimplemented(kubelet: tuple[Path, Kubelet]) -> None:
    path, _ = kubelet
    with pytest.raises(RpcError) as err:
        asyncio.run(
            unary_call(path, "/v1beta1.Registration/Nope", api_pb2.Empty(), api_pb2.Empty, 5)
        )
    assert err.value.code == StatusCode.UNIMPLEMENTED


def test_a_missing_socket_is_unavailable(base: Path) -> None:
    err = failure(base / "kubelet.sock", "x.sock")
    assert err.code == StatusCode.UNAVAILABLE
    assert "kubelet.sock" in err.details and "No such file" in err.details


def test_a_socket_nobody_listens_on_is_unavailable(base: Path) -> None:
    path = base / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody accepts
    assert failure(path, "x.sock").code == StatusCode.UNAVAILABLE


def test_a_server_that_never_answers_hits_the_deadline(kubelet: tuple[Path, Kubelet]) -> None:
    path, servicer = kubelet
    t0 = time.monotonic()
    err = failure(path, "hang", timeout=0.5)
    assert err.code == StatusCode.DEADLINE_EXCEEDED
    assert 0.45 < time.monotonic() - t0 < 3
    assert servicer.left.wait(10)  # the server saw the call end


def test_a_listener_that_never_speaks_hits_the_deadline(base: Path) -> None:
    path = base / "mute.sock"
    mute = socket.socket(socket.AF_UNIX)
    mute.bind(str(path))
    mute.listen()  # accepted by the kernel, never read, never answered
    try:
        t0 = time.monotonic()
        assert failure(path, "x.sock", timeout=0.3).code == StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 3
    finally:
        mute.close()


def test_zero_timeout_fails_at_once(base: Path) -> None:
    assert failure(base / "none.sock", "x", timeout=0).code == StatusCode.DEADLINE_EXCEEDED


_DYING_SERVER = """
import sys, threading, time
from concurrent import futures
import grpc
from sriovdp.proto import api_pb2, api_pb2_grpc

class K(api_pb2_grpc.RegistrationServicer):
    def Register(self, request, context):
        print("in-call", flush=True)
        time.sleep(60)
        return api_pb2.Empty()

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
api_pb2_grpc.add_RegistrationServicer_to_server(K(), server)
server.add_insecure_port("unix:" + sys.argv[1])
server.start()
print("ready", flush=True)
time.sleep(120)
"""


def test_a_server_dying_mid_call_is_unavailable(base: Path) -> None:
    path = base / "dying.sock"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", _DYING_SERVER, str(path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

        async def call_and_kill() -> RpcError:
            task = asyncio.create_task(
                unary_call(path, REGISTER, api_pb2.RegisterRequest(), api_pb2.Empty, 30)
            )
            line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
            assert line.strip() == "in-call"
            proc.send_signal(signal.SIGKILL)
            with pytest.raises(RpcError) as err:
                await task
            return err.value

        t0 = time.monotonic()
        err = asyncio.run(call_and_kill())
        assert err.code == StatusCode.UNAVAILABLE
        assert time.monotonic() - t0 < 10
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_cancelling_the_call_tells_the_server(kubelet: tuple[Path, Kubelet]) -> None:
    path, servicer = kubelet

    async def cancel_it() -> None:
        task = asyncio.create_task(
            unary_call(path, REGISTER, api_pb2.RegisterRequest(endpoint="hang"), api_pb2.Empty, 30)
        )
        while not servicer.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert servicer.left.wait(10)


def test_against_our_own_server(served: Served) -> None:
    def allocate(first: str, timeout: float = 10.0) -> Any:
        req = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=[first])]
        )
        return asyncio.run(
            unary_call(
                served.path,
                "/v1beta1.DevicePlugin/Allocate",
                req,
                api_pb2.AllocateResponse,
                timeout,
            )
        )

    assert allocate("0000:01:00.1").container_responses[0].envs["IDS"] == "0000:01:00.1"
    big = allocate("big:300000")  # over the client's windows: acknowledged as it arrives
    assert len(big.container_responses[0].envs["BIG"]) == 300_000
    with pytest.raises(RpcError) as err:
        allocate("abort:ALREADY_EXISTS:schon da ✓ 50%")
    assert err.value.code == StatusCode.ALREADY_EXISTS
    assert err.value.details == "schon da ✓ 50%"
    with pytest.raises(RpcError) as err:
        allocate("sleep:30", timeout=0.5)
    assert err.value.code == StatusCode.DEADLINE_EXCEEDED


class ScriptedServer:
    """A hand-driven HTTP/2 server (h2 in a thread): answers each call with ``reply(conn, sid)``,
    to send what no well-behaved gRPC server sends."""

    def __init__(self, path: Path, reply: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import h2.config
        import h2.connection
        import h2.events

        with contextlib.suppress(OSError):
            conn_sock, _ = self.sock.accept()
            with conn_sock:
                conn = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=False, header_encoding=None)
                )
                conn.initiate_connection()
                conn_sock.sendall(conn.data_to_send())
                while data := conn_sock.recv(65536):
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.StreamEnded):
                            self.reply(conn, event.stream_id)
                    conn_sock.sendall(conn.data_to_send())
                    if conn.state_machine.state.name == "CLOSED":
                        break

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


GRPC_OK = [(b":status", b"200"), (b"content-type", b"application/grpc")]


def _answer(*parts: Any) -> Any:
    """A reply of parts: ("h", headers, end), ("d", bytes, end), ("rst", code), ("goaway", code)."""

    def reply(conn: Any, sid: int) -> None:
        for part in parts:
            if part[0] == "h":
                conn.send_headers(sid, part[1], end_stream=part[2])
            elif part[0] == "d":
                conn.send_data(sid, part[1], end_stream=part[2])
            elif part[0] == "rst":
                conn.reset_stream(sid, part[1])
            else:
                conn.close_connection(part[1], last_stream_id=0)

    return reply


EMPTY = b"\x00\x00\x00\x00\x00"


OK_TRAILERS = ("h", [(b"grpc-status", b"0")], True)
BAD_ANSWERS = {
    "ok": (_answer(("h", GRPC_OK, False), ("d", EMPTY, False), OK_TRAILERS), StatusCode.OK, ""),
    "http 404": (
        _answer(("h", [(b":status", b"404"), (b"content-type", b"text/plain")], True)),
        StatusCode.UNIMPLEMENTED,
        "HTTP status 404",
    ),
    "http 503": (
        _answer(("h", [(b":status", b"503"), (b"grpc-message", b"busy%20now")], True)),
        StatusCode.UNAVAILABLE,
        "busy now",
    ),
    "http 418": (_answer(("h", [(b":status", b"418")], True)), StatusCode.UNKNOWN, "418"),
    "not grpc": (
        _answer(("h", [(b":status", b"200"), (b"content-type", b"text/html")], True)),
        StatusCode.UNKNOWN,
        "text/html",
    ),
    "no status": (
        _answer(("h", GRPC_OK, False), ("d", EMPTY, True)),
        StatusCode.INTERNAL,
        "grpc-status",
    ),
    "no message": (
        _answer(("h", [*GRPC_OK, (b"grpc-status", b"0")], True)),
        StatusCode.INTERNAL,
        "0 messages",
    ),
    "two messages": (
        _answer(("h", GRPC_OK, False), ("d", EMPTY * 2, False), OK_TRAILERS),
        StatusCode.INTERNAL,
        "2 messages",
    ),
    "truncated": (
        _answer(("h", GRPC_OK, False), ("d", b"\x00\x00\x00\x00\x09ab", False), OK_TRAILERS),
        StatusCode.INTERNAL,
        "truncated",
    ),
    "no protobuf": (
        _answer(("h", GRPC_OK, False), ("d", b"\x00\x00\x00\x00\x02\xff\xff", False), OK_TRAILERS),
        StatusCode.INTERNAL,
        "v1beta1.Empty",
    ),
    "compressed": (
        _answer(("h", GRPC_OK, False), ("d", b"\x01\x00\x00\x00\x00", False)),
        StatusCode.UNIMPLEMENTED,
        "compressed",
    ),
    "unknown code": (
        _answer(("h", [*GRPC_OK, (b"grpc-status", b"77"), (b"grpc-message", b"new")], True)),
        StatusCode.UNKNOWN,
        "new",
    ),
    "refused": (_answer(("rst", 7)), StatusCode.UNAVAILABLE, "REFUSED_STREAM"),
    "cancel": (_answer(("rst", 8)), StatusCode.CANCELLED, "CANCEL"),
    "internal": (_answer(("rst", 2)), StatusCode.INTERNAL, "INTERNAL_ERROR"),
    # the server closes right after its GOAWAY: the client may see the closed socket first
    # (a write fails with EPIPE) and report the lost connection; UNAVAILABLE either way
    "goaway": (_answer(("goaway", 0)), StatusCode.UNAVAILABLE, "GOAWAY|connection lost"),
}


@pytest.mark.parametrize("case", BAD_ANSWERS)
def test_answers_no_good_grpc_server_gives(base: Path, case: str) -> None:
    reply, code, text = BAD_ANSWERS[case]
    path = base / "scripted.sock"
    server = ScriptedServer(path, reply)
    try:
        if code == StatusCode.OK:
            assert register(path, "x", timeout=5) == api_pb2.Empty()
            return
        err = failure(path, "x", timeout=5)
        assert err.code == code
        assert any(t in err.details for t in text.split("|")), err.details
    finally:
        server.close()
