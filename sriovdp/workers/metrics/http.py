"""A small HTTP/1.0 server with hard limits, for scrapes and probes (metrics process).

``http.server`` parses; this module bounds what a client can make it do, since the endpoint
listens on the node's address by default:

- one request per connection (HTTP/1.0, no keep-alive), GET and HEAD only;
- a whole request (line and headers) of at most :attr:`Limits.request_bytes`, else 431;
- one deadline per connection, :attr:`Limits.deadline` seconds from accept to the last byte
  written, applied to every ``recv`` and ``sendall``: a client sending one byte at a time
  (slowloris) or never reading the answer is cut off at the deadline;
- at most :attr:`Limits.connections` connections handled at once, each in a thread; one more is
  closed at accept, unanswered.

The accept loop is the caller's (:func:`accept_ready` when the listening socket polls readable),
so an idle server wakes for nothing. Routes are callables ``(accept header) -> (status, content
type, body)``, run in the connection's thread; the metrics child's state has its own lock.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: (status, content type, body)
Response = tuple[int, str, bytes]
Route = Callable[[str], Response]


@dataclass(frozen=True, slots=True)
class Limits:
    request_bytes: int = 8192
    deadline: float = 5.0
    connections: int = 8


class RequestTooLarge(http.client.LineTooLong):
    """More request bytes than allowed (``http.server`` answers a LineTooLong with 431)."""

    def __init__(self, limit: int) -> None:
        http.client.HTTPException.__init__(self, f"request over {limit} bytes")


class _DeadlineReader:
    """What ``http.server`` reads the request from: the socket, under a byte limit and a deadline
    that hold for the whole request (a buffered socket file would give each ``recv`` the full
    timeout again)."""

    def __init__(self, sock: socket.socket, deadline: float, limit: int) -> None:
        self._sock = sock
        self._deadline = deadline
        self._limit = limit
        self._buf = bytearray()
        self._total = 0
        self.closed = False

    def _fill(self) -> bool:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(left)
        data = self._sock.recv(4096)
        if not data:
            return False
        self._total += len(data)
        if self._total > self._limit:
            raise RequestTooLarge(self._limit)
        self._buf += data
        return True

    def readline(self, size: int = -1) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0 and (size < 0 or end < size):
                cut = end + 1
                break
            if 0 <= size <= len(self._buf):
                cut = size
                break
            if not self._fill():
                cut = len(self._buf)
                break
        line = bytes(self._buf[:cut])
        del self._buf[:cut]
        return line

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            if not self._fill():
                break
        cut = len(self._buf) if size < 0 else min(size, len(self._buf))
        data = bytes(self._buf[:cut])
        del self._buf[:cut]
        return data

    def close(self) -> None:
        self.closed = True


class _DeadlineWriter:
    """Writes with what is left of the connection's deadline (``sendall``'s timeout is total)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self.closed = False

    def write(self, data: bytes) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("response deadline passed")
        self._sock.settimeout(left)
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


class Handler(http.server.BaseHTTPRequestHandler):
    server: BoundedHTTPServer
    protocol_version = "HTTP/1.0"
    server_version = "sriov-dp"
    sys_version = ""
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain; charset=utf-8"

    def setup(self) -> None:
        self.connection = self.request
        deadline = time.monotonic() + self.server.limits.deadline
        self.rfile = _DeadlineReader(self.connection, deadline, self.server.limits.request_bytes)  # type: ignore[assignment]
        self.wfile = _DeadlineWriter(self.connection, deadline)  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
        except RequestTooLarge:  # still in the request line (header lines are answered 431)
            self.send_error(431, "Request too large")
        except OSError as exc:  # timeouts, resets: the client is gone or too slow
            log.debug("%s: %s", self.client_address[0], exc)

    def finish(self) -> None:
        self.rfile.close()
        self.wfile.close()

    def _answer(self, body_wanted: bool) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            status, ctype, body = 404, "text/plain; charset=utf-8", b"not found\n"
        else:
            status, ctype, body = route(self.headers.get("Accept", ""))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body_wanted:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(body_wanted=True)

    def do_HEAD(self) -> None:
        self._answer(body_wanted=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class BoundedHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """``http.server`` with a connection limit; every connection's thread is a daemon."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self, host: str, port: int, routes: Mapping[str, Route], limits: Limits | None = None
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.routes = dict(routes)
        self.limits = limits or Limits()
        self.rejected = 0
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.limits.connections)
        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which may wait on DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def bound(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        return f"[{host}]:{port}" if self.address_family == socket.AF_INET6 else f"{host}:{port}"

    def busy(self) -> int:
        """Connections being handled now."""
        return self._busy

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.rejected += 1
            self.shutdown_request(request)
            return
        with self._busy_lock:
            self._busy += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._busy_lock:
            self._busy -= 1
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


def accept_ready(server: BoundedHTTPServer) -> None:
    """Accepts one waiting connection and hands it to a thread; for a loop that polled the
    server's socket (no accept thread that wakes on a timer)."""
    server.timeout = 0
    server.handle_request()
