"""One unary gRPC call over a fresh unix-socket connection (plugin worker process, any asyncio
loop; the registrar calls the kubelet's Register with it).

:func:`unary_call` connects, sends the request with ``te: trailers``, ``content-type:
application/grpc``, ``grpc-timeout`` and a ``user-agent`` naming sriov-dp, reads the response and
the trailers, and closes the connection. Every failure is an
:class:`~sriovdp.workers.grpcwire.status.RpcError`, coded as grpc's own clients code it:

- the socket cannot be reached, or the connection drops or is refused before the status arrives:
  UNAVAILABLE;
- the timeout passes: DEADLINE_EXCEEDED (the server is told with RST_STREAM CANCEL);
- the server's ``grpc-status`` and ``grpc-message`` otherwise; an HTTP status other than 200 as
  in grpc's http-grpc-status-mapping; RST_STREAM codes as grpc maps them;
- a response that is no valid gRPC answer (no status, no message or more than one, a message
  that does not parse): INTERNAL.

A cancelled call (the caller's task cancelled) resets the stream, closes the connection and
re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from typing import TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from google.protobuf.message import Message
from h2.errors import ErrorCodes

from sriovdp import __version__
from sriovdp.workers.grpcwire.framing import (
    DEFAULT_MAX_MESSAGE,
    FramingError,
    MessageDecoder,
    encode_message,
    format_timeout,
    percent_decode,
)
from sriovdp.workers.grpcwire.status import RpcError, StatusCode

M = TypeVar("M", bound=Message)

USER_AGENT = f"sriov-dp/{__version__} grpcwire (python h2)"
READ_SIZE = 65536

#: grpc/doc/http-grpc-status-mapping.md
HTTP_TO_GRPC = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}
#: RST_STREAM error codes as grpc maps them (anything else: INTERNAL)
RST_TO_GRPC = {
    ErrorCodes.REFUSED_STREAM: StatusCode.UNAVAILABLE,
    ErrorCodes.CANCEL: StatusCode.CANCELLED,
    ErrorCodes.ENHANCE_YOUR_CALM: StatusCode.RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: StatusCode.PERMISSION_DENIED,
}

_CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None)

Headers = dict[bytes, bytes]


async def unary_call(
    path: str | os.PathLike[str],
    method: str,
    request: Message,
    response_class: type[M],
    timeout: float,
    *,
    max_receive_bytes: int = DEFAULT_MAX_MESSAGE,
) -> M:
    """Calls ``method`` (``/pkg.Service/Method``) on the server at unix socket ``path``."""
    if not timeout > 0:
        raise RpcError(StatusCode.DEADLINE_EXCEEDED, f"no time left to call {method}")
    call = _Call(os.fspath(path), method, request, max_receive_bytes, timeout)
    try:
        async with asyncio.timeout(timeout):
            payload = await call.run()
    except TimeoutError:
        raise RpcError(
            StatusCode.DEADLINE_EXCEEDED, f"{method} on {path}: deadline of {timeout:g} s exceeded"
        ) from None
    try:
        return response_class.FromString(payload)
    except Exception as exc:
        name = response_class.DESCRIPTOR.full_name
        raise RpcError(StatusCode.INTERNAL, f"cannot parse the response as {name}: {exc}") from exc


def _headers(raw: Sequence[tuple[bytes | str, bytes | str]] | None) -> Headers:
    out: Headers = {}
    for name, value in raw or ():
        key = name if isinstance(name, bytes) else name.encode()
        out[key] = value if isinstance(value, bytes) else value.encode()
    return out


class _Call:
    """The state of one call: its connection, its stream, what has arrived."""

    def __init__(
        self, path: str, method: str, request: Message, max_receive_bytes: int, timeout: float
    ) -> None:
        self.path = path
        self.method = method
        self.timeout = timeout
        self.body = encode_message(request.SerializeToString())
        self.sent = 0
        self.decoder = MessageDecoder(max_receive_bytes)
        self.messages: list[bytes] = []
        self.response: Headers | None = None
        self.trailers: Headers | None = None
        self.h2 = h2.connection.H2Connection(_CONFIG)
        self.stream_id = 0

    def _unavailable(self, why: str) -> RpcError:
        return RpcError(StatusCode.UNAVAILABLE, f"{self.method} on {self.path}: {why}")

    async def run(self) -> bytes:
        try:
            reader, writer = await asyncio.open_unix_connection(self.path)
        except OSError as exc:
            raise self._unavailable(f"cannot connect: {exc.strerror or exc}") from exc
        try:
            return await self._exchange(reader, writer)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self.h2.reset_stream(self.stream_id, ErrorCodes.CANCEL)
                writer.write(self.h2.data_to_send())
            raise
        except OSError as exc:  # reset by the peer, broken pipe
            raise self._unavailable(f"connection lost: {exc.strerror or exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(Exception):  # the peer's socket may be gone already
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        conn = self.h2
        conn.initiate_connection()
        self.stream_id = conn.get_next_available_stream_id()
        conn.send_headers(
            self.stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", self.method.encode()),
                (b":authority", b"localhost"),
                (b"te", b"trailers"),
                (b"content-type", b"application/grpc"),
                (b"user-agent", USER_AGENT.encode()),
                (b"grpc-timeout", format_timeout(self.timeout).encode()),
            ],
        )
        self._send_body()
        writer.write(conn.data_to_send())
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise self._unavailable("the server closed the connection before the status")
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise self._unavailable(f"HTTP/2 protocol error: {exc}") from exc
            done = False
            for event in events:
                done = self._on_event(event) or done
            out = conn.data_to_send()
            if out:
                writer.write(out)
            if done:
                return self._result()

    def _send_body(self) -> None:
        """Sends as much of the request as the server's windows allow; END_STREAM with the last
        byte (a request is small: this is one DATA frame but against a stingy server)."""
        conn = self.h2
        while self.sent < len(self.body):
            room = min(
                conn.local_flow_control_window(self.stream_id),
                conn.max_outbound_frame_size,
                len(self.body) - self.sent,
            )
            if room <= 0:
                return
            end = self.sent + room
            conn.send_data(
                self.stream_id, self.body[self.sent : end], end_stream=end == len(self.body)
            )
            self.sent = end
        if not self.body:
            conn.end_stream(self.stream_id)

    def _on_event(self, event: h2.events.Event) -> bool:
        """Handles one event; True when the call is over (the server ended our stream)."""
        sid = self.stream_id
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
            self.response = _headers(event.headers)
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
            try:
                self.messages.extend(self.decoder.feed(event.data or b""))
            except FramingError as exc:
                raise RpcError(exc.code, exc.details) from None
        elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == sid:
            self.trailers = _headers(event.headers)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
            return True
        elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
            code = RST_TO_GRPC.get(event.error_code or 0, StatusCode.INTERNAL)  # type: ignore[call-overload]
            raise RpcError(code, f"the server reset the stream ({event.error_code!r})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            if event.last_stream_id is None or event.last_stream_id < sid or event.error_code:
                raise self._unavailable(f"the server sent GOAWAY ({event.error_code!r})")
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._send_body()
        return False

    def _result(self) -> bytes:
        """The response message of a completed stream, or the RpcError it ended with."""
        head = self.response or {}
        # trailers-only: the status is in the one HEADERS frame
        trailers = self.trailers if self.trailers is not None else head
        http_status = head.get(b":status", b"")
        details = percent_decode(trailers.get(b"grpc-message", b""))
        if http_status != b"200":
            try:
                code = HTTP_TO_GRPC.get(int(http_status), StatusCode.UNKNOWN)
            except ValueError:
                code = StatusCode.UNKNOWN
            why = f"HTTP status {http_status.decode(errors='replace')}"
            raise RpcError(code, f"{why}: {details}" if details else why)
        content_type = head.get(b"content-type", b"")
        if not content_type.startswith(b"application/grpc"):
            raise RpcError(
                StatusCode.UNKNOWN, f"response content-type {content_type!r} is not gRPC"
            )
        status = trailers.get(b"grpc-status")
        if status is None:
            raise RpcError(StatusCode.INTERNAL, "the server sent no grpc-status")
        code = StatusCode.from_wire(status)
        if code != StatusCode.OK:
            raise RpcError(code, details)
        if self.decoder.pending or len(self.messages) != 1:
            why = "truncated" if self.decoder.pending else f"{len(self.messages)} messages"
            raise RpcError(
                StatusCode.INTERNAL, f"a unary call needs one response message, got {why}"
            )
        return self.messages[0]
