"""The metrics child's HTTP server under hostile clients, with raw sockets
(``sriovdp.workers.metrics.http``): size limits, one deadline per connection, a connection cap,
garbage; the server keeps answering well-formed requests afterwards."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sriovdp.workers.metrics.http import BoundedHTTPServer, Limits, Response, accept_ready

pytestmark = pytest.mark.timeout(60)

LIMITS = Limits(request_bytes=4096, deadline=0.5, connections=4)
#: more than loopback socket buffers hold: sending it blocks while the client does not read
BIG = b"x" * 16_000_000


def _hello(_accept: str) -> Response:
    return 200, "text/plain", b"hello\n"


def _big(_accept: str) -> Response:
    return 200, "text/plain", BIG


@pytest.fixture
def server() -> Iterator[BoundedHTTPServer]:
    srv = BoundedHTTPServer("127.0.0.1", 0, {"/hello": _hello, "/big": _big}, LIMITS)
    stop = threading.Event()

    def loop() -> None:  # as the metrics child's loop does: accept when the socket polls ready
        with selectors.DefaultSelector() as sel:
            sel.register(srv.fileno(), selectors.EVENT_READ)
            while not stop.is_set():
                if sel.select(0.05):
                    accept_ready(srv)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        stop.set()
        thread.join(5)
        srv.server_close()


def _connect(srv: BoundedHTTPServer) -> socket.socket:
    return socket.create_connection(srv.server_address[:2], timeout=10)  # type: ignore[arg-type]


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _request(srv: BoundedHTTPServer, raw: bytes) -> bytes:
    with _connect(srv) as sock:
        sock.sendall(raw)
        return _read_all(sock)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def _works(srv: BoundedHTTPServer) -> bool:
    answer = _request(srv, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    return _status(answer) == 200 and answer.endswith(b"\r\n\r\nhello\n")


def test_a_plain_request_and_the_answers_for_the_rest(server: BoundedHTTPServer) -> None:
    assert _works(server)
    assert _status(_request(server, b"GET /nope HTTP/1.0\r\n\r\n")) == 404
    assert _status(_request(server, b"POST /hello HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")) == 501
    head = _request(server, b"HEAD /hello HTTP/1.0\r\n\r\n")
    assert _status(head) == 200
    assert head.endswith(b"\r\n\r\n")  # no body


def test_huge_headers_are_refused_with_431(server: BoundedHTTPServer) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"y" * 1000) for i in range(20))
    answer = _request(server, b"GET /hello HTTP/1.0\r\n" + headers + b"\r\n")
    assert _status(answer) == 431
    assert _works(server)


def test_a_huge_request_line_is_refused(server: BoundedHTTPServer) -> None:
    with _connect(server) as sock:
        # the server may close before we finish sending: refused all the same
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /" + b"a" * 100_000)
        answer = _read_all(sock)
    assert answer == b"" or _status(answer) == 431
    assert _works(server)


def test_random_bytes_get_400_or_a_closed_connection(server: BoundedHTTPServer) -> None:
    for _ in range(50):
        answer = _request(server, os.urandom(512) + b"\r\n\r\n")
        # a line that looks like HTTP/0.9 gets the bare error text, as HTTP/0.9 has no headers
        assert answer == b"" or _status(answer) == 400 or answer.startswith(b"400 "), answer
    assert _works(server)


def test_slowloris_is_cut_at_the_deadline(server: BoundedHTTPServer) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /hello HTTP/1.0\r\n")
        closed = False
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"X-a: b\r\n")
            except OSError:
                closed = True
                break
            sock.settimeout(0.1)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        elapsed = time.monotonic() - started
    assert closed
    assert LIMITS.deadline <= elapsed < LIMITS.deadline + 1.5
    assert _works(server)


def test_a_client_that_never_reads_is_cut_at_the_deadline(server: BoundedHTTPServer) -> None:
    with _connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        started = time.monotonic()
        sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        assert _wait(lambda: server.busy() == 1, 5)
        assert _wait(lambda: server.busy() == 0, LIMITS.deadline + 2)
        assert time.monotonic() - started >= LIMITS.deadline * 0.9
    assert _works(server)


def test_connections_over_the_cap_are_closed_and_the_cap_recovers(
    server: BoundedHTTPServer,
) -> None:
    idle = [_connect(server) for _ in range(LIMITS.connections)]
    try:
        assert _wait(lambda: server.busy() == LIMITS.connections, 5)
        extra = _connect(server)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed at accept, unanswered
        extra.close()
        assert server.rejected >= 1
    finally:
        for sock in idle:
            sock.close()
    assert _wait(lambda: server.busy() == 0, 5)
    assert _works(server)


def _wait(check: object, timeout: float) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False
