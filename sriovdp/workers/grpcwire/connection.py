"""One client connection of a gRPC server: HTTP/2 in, RPC handler tasks out (plugin worker
process, the server's asyncio loop).

:class:`Connection` is an :class:`asyncio.Protocol`: bytes go into ``h2``'s state machine, its
events open streams, feed their requests and cancel their handlers; whatever ``h2`` has to send
(SETTINGS acks, PING answers, WINDOW_UPDATEs, responses) is written at the end of each callback.
Nothing here runs unless bytes arrive or a handler sends: no timer but a call's own deadline.

Per stream: the request headers are checked (``POST``, ``content-type: application/grpc``, a
known method, no compression, a well-formed ``grpc-timeout``), the single request message is
decoded as it arrives, and its handler runs as a task. Responses go out as HEADERS, DATA, then
trailers (``grpc-status``, ``grpc-message``) with END_STREAM; an RPC that fails before sending
anything gets one trailers-only HEADERS frame. DATA is sent within the peer's stream and
connection windows and its frame size, waiting for WINDOW_UPDATE when a window is spent and for
the transport to drain when the peer reads slowly; received data is acknowledged at once, so the
peer's windows reopen.

A stream reset by the client, or a connection that drops, cancels its handlers at once (their
``finally`` runs); a handler that raises ends its RPC with UNKNOWN and is logged. A protocol
error or garbage ends that connection (GOAWAY), logged once; other connections never notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from google.protobuf.message import Message
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from sriovdp.workers.grpcwire.framing import (
    FramingError,
    MessageDecoder,
    encode_message,
    parse_timeout,
    percent_encode,
)
from sriovdp.workers.grpcwire.methods import Method
from sriovdp.workers.grpcwire.status import RpcError, StatusCode

if TYPE_CHECKING:
    from sriovdp.workers.grpcwire.server import Server

log = logging.getLogger(__name__)

#: how many RPCs a client may run at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS)
MAX_CONCURRENT_STREAMS = 256
#: request header list limit (grpc's own default is 8-16 KiB)
MAX_HEADER_LIST_SIZE = 16 * 1024

_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_OK_TRAILERS = [(b"grpc-status", b"0")]
_GRPC_CONTENT_TYPES = (b"application/grpc", b"application/grpc+", b"application/grpc;")


class _H2Connection(h2.connection.H2Connection):
    #: h2 remembers how its last 65536 streams closed, to tell late frames on them from protocol
    #: errors: some 11 MB on a kubelet connection that lives for months of Allocate calls. A
    #: client has at most a handful of calls in flight; late frames come right after the end.
    MAX_CLOSED_STREAMS = 1024


class AbortError(RpcError):
    """Raised by :meth:`ServicerContext.abort`: ends the RPC with its code and details."""


class StreamGone(Exception):
    """A write on a stream that has already ended (reset, timed out, or connection lost)."""


def _trailers(code: StatusCode, details: str) -> list[tuple[bytes, bytes]]:
    if code == StatusCode.OK and not details:
        return _OK_TRAILERS
    out = [(b"grpc-status", str(int(code)).encode())]
    if details:
        out.append((b"grpc-message", percent_encode(details).encode("ascii")))
    return out


class _Stream:
    """One RPC on the connection; lives in ``Connection.streams`` until it is fully closed."""

    __slots__ = (
        "cancel_status",
        "deadline",
        "decoder",
        "ended",
        "headers_sent",
        "id",
        "method",
        "remote_ended",
        "task",
        "timer",
        "window",
    )

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.method: Method | None = None
        self.decoder: MessageDecoder | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.deadline: float | None = None
        self.headers_sent = False
        self.remote_ended = False
        self.ended = False
        #: why the handler task was cancelled: the status to answer with, or None (client gone)
        self.cancel_status: tuple[StatusCode, str] | None = None
        #: resolved when the peer's window for this stream (or the connection) grows
        self.window: asyncio.Future[None] | None = None


class ServicerContext:
    """What a handler gets besides its request: streaming writes, abort, deadline."""

    __slots__ = ("_conn", "_stream")

    def __init__(self, conn: Connection, stream: _Stream) -> None:
        self._conn = conn
        self._stream = stream

    @property
    def method(self) -> str:
        assert self._stream.method is not None
        return self._stream.method.path

    async def write(self, message: Message) -> None:
        """Sends one response message (server-streaming handlers); returns once it is handed to
        the transport within the peer's flow-control windows. Raises :class:`StreamGone` when
        the stream has ended."""
        await self._conn.send_message(self._stream, message.SerializeToString())

    def abort(self, code: StatusCode, details: str = "") -> NoReturn:
        """Ends the RPC with ``code`` (not OK) and ``details``: raises, never returns."""
        if code == StatusCode.OK:
            raise ValueError("abort() needs an error code, not OK")
        raise AbortError(code, details)

    def time_remaining(self) -> float | None:
        """Seconds left before the client's deadline, or None without one."""
        deadline = self._stream.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - asyncio.get_running_loop().time())


class Connection(asyncio.Protocol):
    """The HTTP/2 server side of one accepted unix-socket connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.h2 = _H2Connection(server.h2_config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        #: the last stream id we promised to serve in our graceful GOAWAY (None: not sent)
        self.goaway_last: int | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._failure_logged = False
        self._dispatch: dict[type[h2.events.Event], Callable[[Any], None]] = {
            h2.events.RequestReceived: self._on_request,
            h2.events.DataReceived: self._on_data,
            h2.events.StreamEnded: self._on_stream_ended,
            h2.events.StreamReset: self._on_stream_reset,
            h2.events.WindowUpdated: self._on_window_updated,
            h2.events.RemoteSettingsChanged: self._on_settings_changed,
            h2.events.ConnectionTerminated: self._on_terminated,
            h2.events.TrailersReceived: self._on_trailers,
        }

    # -- transport callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        self.h2.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            if self.h2.state_machine.state != h2.connection.ConnectionState.CLOSED:
                # a bad preface: h2 raises before its own GOAWAY (it queues one for bad frames)
                self.h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
            self.fail(f"HTTP/2 protocol error: {exc}")
            return
        try:
            dispatch = self._dispatch
            for event in events:
                if self.closed:
                    return
                handler = dispatch.get(type(event))
                if handler is not None:
                    handler(event)
        except Exception as exc:  # a bug of ours: this connection ends, the server goes on
            kinds = ", ".join(type(e).__name__ for e in events)
            log.exception("closing gRPC connection: internal error handling %s", kinds)
            self._failure_logged = True
            self.fail(f"internal error: {exc!r}")
            return
        self.flush()

    def eof_received(self) -> bool | None:
        return None  # gRPC clients never half-close the socket: close it

    def pause_writing(self) -> None:
        """The client reads slower than we write: streams wait in :meth:`_drain`, and its
        requests wait in the socket (unary answers are written without waiting)."""
        self._paused = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self.closed and not self.transport.is_reading():
            self.transport.resume_reading()
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shut()

    def _shut(self, abort: bool = False) -> None:
        """Nothing more goes out: the transport closes (after what is queued, unless ``abort``)
        and every handler is cancelled without an answer."""
        if self.closed:
            return
        self.closed = True
        self.server.connections.discard(self)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._drop(stream, None)
        self.resume_writing()  # wakes writers: they see the closed connection

    # -- sending ---------------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    def fail(self, reason: str) -> None:
        """Ends this connection for a protocol violation (logged once per connection)."""
        if not self._failure_logged:
            self._failure_logged = True
            log.warning("closing gRPC connection: %s", reason)
        self.flush()
        self._shut()

    async def _drain(self) -> None:
        fut = self.loop.create_future()
        self._drain_waiters.append(fut)
        await fut

    async def _wait_window(self, stream: _Stream) -> None:
        fut = stream.window = self.loop.create_future()
        try:
            await fut
        finally:
            stream.window = None

    async def send_message(self, stream: _Stream, payload: bytes) -> None:
        """Headers first if not yet sent, then one length-prefixed message."""
        if stream.ended or self.closed:
            raise StreamGone(f"stream {stream.id} has ended")
        if not stream.headers_sent:
            stream.headers_sent = True
            self.h2.send_headers(stream.id, _RESPONSE_HEADERS)
        await self._send_data(stream, encode_message(payload))

    async def _send_data(self, stream: _Stream, data: bytes) -> None:
        h2conn = self.h2
        view = memoryview(data)
        while view:
            if stream.ended or self.closed:
                raise StreamGone(f"stream {stream.id} has ended")
            try:
                window = h2conn.local_flow_control_window(stream.id)
            except h2.exceptions.StreamClosedError:
                raise StreamGone(f"stream {stream.id} was reset") from None
            if window <= 0:
                self.flush()
                await self._wait_window(stream)
                continue
            frame = h2conn.max_outbound_frame_size
            budget = min(window, len(view))
            while budget > 0:
                n = min(budget, frame)
                h2conn.send_data(stream.id, view[:n].tobytes())
                view = view[n:]
                budget -= n
            self.flush()
            if self._paused and not self.closed:
                await self._drain()

    def finish(self, stream: _Stream, code: StatusCode, details: str) -> None:
        """Ends the RPC with its status (trailers, or trailers-only if nothing was sent) and
        forgets the stream; a client still sending is told to stop (RST_STREAM NO_ERROR)."""
        if stream.ended:
            return
        stream.ended = True
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if self.closed:
            return
        self.streams.pop(stream.id, None)
        trailers = _trailers(code, details)
        if not stream.headers_sent:
            trailers = [*_RESPONSE_HEADERS, *trailers]
        try:
            self.h2.send_headers(stream.id, trailers, end_stream=True)
        except h2.exceptions.ProtocolError:
            return  # the stream was reset meanwhile: nobody to tell
        self._stop_receiving(stream.id)
        self.flush()

    def _stop_receiving(self, sid: int) -> None:
        """After our END_STREAM: a client still sending (its side open) is told to stop with
        RST_STREAM NO_ERROR, as grpc servers do, so the stream closes at once."""
        h2_stream = self.h2.streams.get(sid)
        if h2_stream is not None and not h2_stream.closed:
            self.h2.reset_stream(sid, ErrorCodes.NO_ERROR)

    def _drop(self, stream: _Stream, status: tuple[StatusCode, str] | None) -> None:
        """Cancels the stream's handler (``status``: what to answer; None: nothing, the client
        is gone) or, without a handler yet, answers right away."""
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.task is not None and not stream.task.done():
            stream.cancel_status = status
            if status is None:
                stream.ended = True  # nothing more may be sent, whatever the handler does
            stream.task.cancel()
        elif status is not None:
            self.finish(stream, *status)
        else:
            stream.ended = True
        if stream.window is not None and not stream.window.done():
            stream.window.set_result(None)

    # -- events ----------------------------------------------------------------------------------

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        assert sid is not None
        if self.goaway_last is not None and sid > self.goaway_last:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)  # the client may retry it
            return
        stream = _Stream(sid)
        stream.remote_ended = event.stream_ended is not None
        self.streams[sid] = stream
        http_method = path = content_type = timeout = encoding = None
        for name, value in event.headers or ():
            if name == b":path":
                path = value
            elif name == b":method":
                http_method = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding":
                encoding = value
        if http_method != b"POST":
            self._refuse(
                stream, b"405", StatusCode.INTERNAL, f"gRPC requires POST, not {http_method!r}"
            )
            return
        if content_type is None or not content_type.startswith(_GRPC_CONTENT_TYPES):
            self._refuse(
                stream,
                b"415",
                StatusCode.INTERNAL,
                f"invalid gRPC request content-type {content_type!r}",
            )
            return
        method = self.server.methods.get(path or b"")
        if method is None:
            self.finish(stream, StatusCode.UNIMPLEMENTED, f"unknown method {path!r}")
            return
        if encoding is not None and encoding != b"identity":
            self.finish(
                stream, StatusCode.UNIMPLEMENTED, f"grpc-encoding {encoding!r} is not supported"
            )
            return
        stream.method = method
        if timeout is not None:
            try:
                seconds = parse_timeout(timeout)
            except ValueError as exc:
                self.finish(stream, StatusCode.INTERNAL, str(exc))
                return
            stream.deadline = self.loop.time() + seconds
            stream.timer = self.loop.call_later(seconds, self._deadline_expired, stream)
        stream.decoder = MessageDecoder(self.server.max_receive_bytes)
        # a request without a body is answered on its StreamEnded event, next in this batch

    def _refuse(self, stream: _Stream, http_status: bytes, code: StatusCode, details: str) -> None:
        """A request that is no gRPC call: an HTTP error status with a gRPC status as well."""
        stream.ended = True
        self.streams.pop(stream.id, None)
        headers = [
            (b":status", http_status),
            (b"content-type", b"application/grpc"),
            *_trailers(code, details),
        ]
        self.h2.send_headers(stream.id, headers, end_stream=True)
        self._stop_receiving(stream.id)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        assert sid is not None
        if event.flow_controlled_length:
            self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
        stream = self.streams.get(sid)
        if stream is None or stream.decoder is None or stream.ended:
            return
        try:
            messages = stream.decoder.feed(event.data or b"")
        except FramingError as exc:
            self._drop(stream, (exc.code, exc.details))
            return
        if not messages:
            return
        method = stream.method
        assert method is not None
        if stream.task is not None or len(messages) > 1:
            self._drop(stream, (StatusCode.INTERNAL, "more than one request message"))
            return
        try:
            request = method.request_class.FromString(messages[0])
        except Exception as exc:  # DecodeError, or anything else protobuf may raise
            name = method.request_class.DESCRIPTOR.full_name
            self.finish(stream, StatusCode.INTERNAL, f"cannot parse the request as {name}: {exc}")
            return
        stream.task = self.loop.create_task(self._run(stream, method, request))

    def _on_stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is None:
            return
        stream.remote_ended = True
        if stream.task is None and not stream.ended:
            decoder = stream.decoder
            why = (
                "truncated (the stream ended inside a message)"
                if decoder and decoder.pending
                else "missing"
            )
            self.finish(stream, StatusCode.INTERNAL, f"the request message is {why}")

    def _on_trailers(self, event: h2.events.TrailersReceived) -> None:
        pass  # a client's trailers end its side, reported as StreamEnded too

    def _on_stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.pop(event.stream_id or 0, None)
        if stream is not None:
            self._drop(stream, None)

    def _on_window_updated(self, event: h2.events.WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.window is not None and not stream.window.done():
                stream.window.set_result(None)
        else:
            self._wake_all_windows()

    def _on_settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        self._wake_all_windows()  # a larger initial window or frame size may unblock writers

    def _wake_all_windows(self) -> None:
        for stream in self.streams.values():
            if stream.window is not None and not stream.window.done():
                stream.window.set_result(None)

    def _on_terminated(self, event: h2.events.ConnectionTerminated) -> None:
        if event.error_code:
            log.info("gRPC client ended the connection: %s", event.error_code)
        self._shut()  # h2 sends nothing after a GOAWAY: the calls in flight are over

    def _deadline_expired(self, stream: _Stream) -> None:
        stream.timer = None
        if not stream.ended:
            self._drop(stream, (StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))
            self.flush()

    # -- handlers --------------------------------------------------------------------------------

    async def _run(self, stream: _Stream, method: Method, request: Any) -> None:
        context = ServicerContext(self, stream)
        code, details = StatusCode.OK, ""
        try:
            result = await method.handler(request, context)
            if not method.server_streaming and stream.cancel_status is None:
                await self._send_unary(stream, result.SerializeToString())
        except AbortError as exc:
            code, details = exc.code, exc.details
        except asyncio.CancelledError:
            if stream.cancel_status is None:
                return  # the client is gone or reset the stream: nobody to answer
            code, details = stream.cancel_status
        except StreamGone:
            return
        except Exception as exc:
            log.exception("gRPC handler %s failed", method.path)
            code, details = StatusCode.UNKNOWN, f"unexpected {type(exc).__name__} in the handler"
        if stream.cancel_status is not None:  # also when the handler swallowed its cancellation
            code, details = stream.cancel_status
        self.finish(stream, code, details)

    async def _send_unary(self, stream: _Stream, payload: bytes) -> None:
        """The one response of a unary call, in one write when the windows allow (they do,
        but for answers over 16 KiB or a client that reads nothing)."""
        if stream.ended or self.closed:
            raise StreamGone(f"stream {stream.id} has ended")
        data = encode_message(payload)
        h2conn = self.h2
        sid = stream.id
        if len(data) <= min(h2conn.local_flow_control_window(sid), h2conn.max_outbound_frame_size):
            stream.ended = True
            if stream.timer is not None:
                stream.timer.cancel()
                stream.timer = None
            self.streams.pop(sid, None)
            h2conn.send_headers(sid, _RESPONSE_HEADERS)
            h2conn.send_data(sid, data)
            h2conn.send_headers(sid, _OK_TRAILERS, end_stream=True)
            self._stop_receiving(sid)
            self.flush()
            return
        stream.headers_sent = True
        h2conn.send_headers(sid, _RESPONSE_HEADERS)
        await self._send_data(stream, data)

    # -- server stop -----------------------------------------------------------------------------

    def goaway(self) -> None:
        """Tells the client to open no new stream (graceful GOAWAY, NO_ERROR); streams it has
        opened so far go on. Written by hand: h2 allows nothing more after its own GOAWAY."""
        if self.closed or self.transport is None or self.goaway_last is not None:
            return
        self.flush()
        self.goaway_last = self.h2.highest_inbound_stream_id
        frame = GoAwayFrame(0, last_stream_id=self.goaway_last, error_code=ErrorCodes.NO_ERROR)
        self.transport.write(frame.serialize())

    def tasks(self) -> list[asyncio.Task[None]]:
        return [s.task for s in self.streams.values() if s.task is not None and not s.task.done()]

    def cancel_streams(self, details: str) -> None:
        """Ends every RPC still open with UNAVAILABLE (handlers are cancelled)."""
        for stream in list(self.streams.values()):
            self._drop(stream, (StatusCode.UNAVAILABLE, details))
        self.flush()

    def close(self) -> None:
        """Final GOAWAY and close (a client that reads nothing is cut off at once)."""
        if self.closed or self.transport is None:
            return
        if self.h2.state_machine.state != h2.connection.ConnectionState.CLOSED:
            self.h2.close_connection(ErrorCodes.NO_ERROR)
            self.flush()
        limit = self.transport.get_write_buffer_limits()[1]
        self._shut(abort=self.transport.get_write_buffer_size() > limit)
