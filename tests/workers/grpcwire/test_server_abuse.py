"""Our gRPC server against raw sockets: garbage, truncated prefaces, junk frames, oversized,
compressed and malformed messages, non-gRPC requests, stingy flow-control windows. Each bad
connection is answered or closed (and logged once); a grpcio client is served afterwards."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

from sriovdp.proto import api_pb2
from sriovdp.workers.grpcwire.framing import encode_message
from tests.workers.grpcwire.conftest import MAX_RECEIVE, Served

pytestmark = pytest.mark.timeout(90)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ALLOCATE = b"/v1beta1.DevicePlugin/Allocate"


def connect(served: Served) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(served.path))
    return s


def read_to_eof(s: socket.socket) -> bytes:
    out = bytearray()
    while chunk := s.recv(65536):
        out += chunk
    return bytes(out)


def frames(data: bytes) -> Iterator[Frame]:
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        yield frame
        view = view[9 + length :]


def goaway_code(data: bytes) -> int | None:
    codes = [f.error_code for f in frames(data) if isinstance(f, GoAwayFrame)]
    return codes[-1] if codes else None


def still_serves(served: Served) -> None:
    with grpc.insecure_channel(f"unix:{served.path}") as ch:
        call = ch.unary_unary(
            "/v1beta1.DevicePlugin/GetDevicePluginOptions",
            request_serializer=api_pb2.Empty.SerializeToString,
            response_deserializer=api_pb2.DevicePluginOptions.FromString,
        )
        assert call(api_pb2.Empty(), timeout=10).get_preferred_allocation_available


def closing_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "closing gRPC connection" in r.getMessage()
    ]


class H2Client:
    """A hand-driven HTTP/2 client: sends what the test says, acknowledges data only on request."""

    def __init__(self, served: Served, window: int | None = None) -> None:
        self.sock = connect(served)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.events: list[h2.events.Event] = []

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(
        self,
        body: bytes | None,
        *,
        path: bytes = ALLOCATE,
        method: bytes = b"POST",
        content_type: bytes = b"application/grpc",
        extra: tuple[tuple[bytes, bytes], ...] = (),
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"localhost"),
            (b"content-type", content_type),
            (b"te", b"trailers"),
            *extra,
        ]
        self.conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def pump(self, timeout: float = 10.0) -> bool:
        """Reads once (up to ``timeout``); False on EOF or when nothing came."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            return False
        self.events.extend(self.conn.receive_data(data))
        self.flush()
        return True

    def until_ended(self, sid: int, timeout: float = 10.0) -> dict[bytes, bytes]:
        """Every header and trailer of stream ``sid`` once it has ended (data acknowledged)."""
        deadline = time.monotonic() + timeout
        while not self.ended(sid) and time.monotonic() < deadline:
            self.pump(max(0.01, deadline - time.monotonic()))
            for e in self.events:
                if isinstance(e, h2.events.DataReceived) and e.flow_controlled_length:
                    self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
                    e.flow_controlled_length = 0
            self.flush()
        assert self.ended(sid)
        out: dict[bytes, bytes] = {}
        for e in self.events:
            headers = (h2.events.ResponseReceived, h2.events.TrailersReceived)
            if isinstance(e, headers) and e.stream_id == sid:
                out.update(dict(e.headers or []))
        return out

    def ended(self, sid: int) -> bool:
        return any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
            for e in self.events
        )

    def data(self, sid: int) -> bytes:
        return b"".join(
            e.data or b""
            for e in self.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
        )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(served: Served) -> Iterator[Any]:
    clients: list[H2Client] = []

    def make(window: int | None = None) -> H2Client:
        c = H2Client(served, window)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        bytes(range(256)) * 4,
        b"\x00" * 9 + PREFACE,
    ],
)
def test_garbage_instead_of_a_preface_closes_that_connection(
    served: Served, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    s = connect(served)
    s.sendall(garbage)
    data = read_to_eof(s)  # the server closes
    s.close()
    assert goaway_code(data) == 1  # PROTOCOL_ERROR
    assert len(closing_warnings(caplog)) == 1
    still_serves(served)


def test_a_truncated_preface_waits_quietly_and_closes_with_the_client(served: Served) -> None:
    idle = connect(served)
    idle.sendall(PREFACE[:10])
    still_serves(served)  # a half-open connection holds nobody up
    idle.shutdown(socket.SHUT_WR)
    data = read_to_eof(idle)
    idle.close()
    assert all(isinstance(f, SettingsFrame) for f in frames(data))  # only the server preface
    still_serves(served)


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\x00\x05\x00\x00\x00\x00\x00\x00hello",  # DATA on stream 0
        b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff",  # HEADERS with broken HPACK
        b"\x00\x10\x00\x00\x00\x00\x00\x00\x01" + b"x" * 4096,  # over the max frame size
        b"\x00\x00\x03\x04\x00\x00\x00\x00\x00abc",  # SETTINGS of a length not a multiple of 6
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # WINDOW_UPDATE of 0
    ],
)
def test_a_valid_preface_then_junk_frames_closes_that_connection(
    served: Served, caplog: pytest.LogCaptureFixture, junk: bytes
) -> None:
    good = H2Client(served)  # a neighbour with an open stream is not disturbed
    sid = good.request(encode_message(b""), path=b"/v1beta1.DevicePlugin/ListAndWatch")
    while not good.data(sid):
        assert good.pump()
    s = connect(served)
    s.sendall(PREFACE + SettingsFrame(0).serialize() + junk)
    data = read_to_eof(s)
    s.close()
    assert goaway_code(data) not in (None, 0)
    assert len(closing_warnings(caplog)) == 1
    still_serves(served)
    served.servicer.push(api_pb2.ListAndWatchResponse())
    before = len(good.data(sid))
    while len(good.data(sid)) == before:
        assert good.pump()
    good.close()


def test_an_oversized_message_is_refused_from_its_prefix(client: Any, served: Served) -> None:
    c = client()
    # announces 10 MB but sends 100 bytes: refused at once, the rest is never needed
    sid = c.request(b"\x00" + (10_000_000).to_bytes(4, "big") + b"x" * 100, end=False)
    headers = c.until_ended(sid)
    assert headers[b"grpc-status"] == b"8"  # RESOURCE_EXHAUSTED
    assert str(MAX_RECEIVE).encode() in headers[b"grpc-message"]
    assert any(isinstance(e, h2.events.StreamReset) for e in c.events)  # "stop sending"
    still_serves(served)


def test_a_compressed_message_is_unimplemented(client: Any, served: Served) -> None:
    c = client()
    body = api_pb2.AllocateRequest().SerializeToString()
    sid = c.request(b"\x01" + len(body).to_bytes(4, "big") + body)
    assert c.until_ended(sid)[b"grpc-status"] == b"12"
    still_serves(served)


@pytest.mark.parametrize(
    "body,code,text",
    [
        (encode_message(b"\xff\xff\xff\xff"), b"13", b"v1beta1.AllocateRequest"),
        (b"\x00\x00\x00", b"13", b"truncated"),  # the stream ends inside the prefix
        (b"", b"13", b"missing"),
        (encode_message(b"") * 2, b"13", b"more than one"),
        (b"\x02" + encode_message(b"")[1:], b"13", b"flag"),
    ],
)
def test_malformed_requests_get_a_clear_status(
    client: Any, served: Served, body: bytes, code: bytes, text: bytes
) -> None:
    c = client()
    headers = c.until_ended(c.request(body))
    assert headers[b":status"] == b"200"
    assert headers[b"grpc-status"] == code
    assert text in headers[b"grpc-message"]
    still_serves(served)


def test_a_request_without_a_body_is_refused(client: Any) -> None:
    c = client()
    headers = c.until_ended(c.request(None))
    assert headers[b"grpc-status"] == b"13"


def test_requests_that_are_no_grpc_calls(client: Any, served: Served) -> None:
    c = client()
    got = c.until_ended(c.request(encode_message(b""), method=b"PUT"))
    assert got[b":status"] == b"405" and got[b"grpc-status"] == b"13"
    got = c.until_ended(c.request(encode_message(b""), content_type=b"application/json"))
    assert got[b":status"] == b"415" and b"application/json" in got[b"grpc-message"]
    got = c.until_ended(c.request(encode_message(b""), content_type=b"application/grpc+proto"))
    assert got[b":status"] == b"200" and got[b"grpc-status"] == b"0"
    got = c.until_ended(c.request(encode_message(b""), extra=((b"grpc-timeout", b"123456789S"),)))
    assert got[b"grpc-status"] == b"13" and b"grpc-timeout" in got[b"grpc-message"]
    got = c.until_ended(c.request(encode_message(b""), extra=((b"grpc-encoding", b"gzip"),)))
    assert got[b"grpc-status"] == b"12"
    still_serves(served)


def test_the_server_enforces_grpc_timeout(client: Any, served: Served) -> None:
    c = client()
    req = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["sleep:30"])]
    )
    t0 = time.monotonic()
    sid = c.request(encode_message(req.SerializeToString()), extra=((b"grpc-timeout", b"200m"),))
    headers = c.until_ended(sid)
    assert headers[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED, from the server
    assert 0.15 < time.monotonic() - t0 < 5
    assert served.rec.wait(lambda: ("sleep:30", "cancelled") in served.rec.finished, 5)


def test_the_server_sends_within_a_stingy_window_and_waits_for_updates(
    client: Any, served: Served
) -> None:
    c = client(window=1000)  # the stream window; h2 here raises if the server overruns it
    req = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["big:20000"])]
    )
    sid = c.request(encode_message(req.SerializeToString()))
    while len(c.data(sid)) < 1000:
        assert c.pump()
    assert not c.pump(0.3)  # the window is spent: the server waits
    assert len(c.data(sid)) == 1000
    c.conn.acknowledge_received_data(1000, sid)
    c.flush()
    headers = c.until_ended(sid)  # acknowledges as data arrives
    assert headers[b"grpc-status"] == b"0"
    payload = c.data(sid)
    resp = api_pb2.AllocateResponse.FromString(payload[5:])
    assert len(resp.container_responses[0].envs["BIG"]) == 20000


def test_pings_are_answered(client: Any) -> None:
    c = client()
    c.conn.ping(b"12345678")
    c.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        c.pump(1)
        acks = [e for e in c.events if isinstance(e, h2.events.PingAckReceived)]
        if acks:
            assert acks[0].ping_data == b"12345678"
            return
    pytest.fail("no PING ack")


def test_a_client_that_never_reads_is_not_buffered_without_bound(served: Served) -> None:
    """Answers pile up for a client that sends and never reads: past the transport's high-water
    mark the server stops reading it, so the client's sends block (the kernel buffers fill)
    instead of the server's memory growing with every request."""
    c = H2Client(served)
    c.sock.settimeout(3)
    path = b"/v1beta1.DevicePlugin/GetDevicePluginOptions"
    sent, blocked = 0, False
    while sent < 20_000 and not blocked:
        for _ in range(25):  # paced: the server finishes them before the next ones come
            sid = c.conn.get_next_available_stream_id()
            headers = [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path),
                (b":authority", b"localhost"),
                (b"content-type", b"application/grpc"),
            ]
            c.conn.send_headers(sid, headers)
            c.conn.send_data(sid, encode_message(b""), end_stream=True)
        try:
            c.sock.sendall(c.conn.data_to_send())
        except TimeoutError:
            blocked = True
        sent += 25
        time.sleep(0.004)

    async def buffered() -> int:
        (conn,) = served.server.connections
        assert conn.transport is not None
        return conn.transport.get_write_buffer_size()

    size = served.call(buffered())
    assert blocked, f"{sent} requests sent, none blocked"
    assert size < 200_000  # the high-water mark (64 KiB) and the answers to one read
    c.close()
    still_serves(served)
