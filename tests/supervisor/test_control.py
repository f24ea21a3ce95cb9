"""Control socket: requests and replies by id, garbage answered or dropped, never a crash."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from sriovdp.shared.bus import RunDir
from sriovdp.supervisor.client import CommandFailed, ControlClient, Unreachable
from sriovdp.supervisor.control import CommandError, ControlServer


def _restart(args: Mapping[str, Any]) -> Any:
    if args.get("name") != "a":
        raise CommandError(f"no child named {args.get('name')!r}")
    return {"name": "a"}


def _boom(_args: Mapping[str, Any]) -> Any:
    raise RuntimeError("handler bug")


class ServerThread:
    def __init__(self, run_dir: Path) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        handlers = {"status": lambda _a: {"pid": 1}, "restart": _restart, "boom": _boom}
        self.server = ControlServer(self.ctx, run_dir, handlers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.server.sock.poll(20):
                self.server.handle()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()
        self.ctx.term()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    s = ServerThread(tmp_path)
    yield s
    s.stop()


def test_request_reply_and_refusal(server: ServerThread, tmp_path: Path) -> None:
    with ControlClient(tmp_path, timeout=2.0) as client:
        assert client.request("status") == {"pid": 1}
        assert client.request("restart", name="a") == {"name": "a"}
        with pytest.raises(CommandFailed, match="no child named 'zz'"):
            client.request("restart", name="zz")
        with pytest.raises(CommandFailed, match="unknown command 'nope'"):
            client.request("nope")


GARBAGE: list[list[bytes]] = [
    [b"\xc1"],  # never valid msgpack
    [b"not msgpack at all"],
    [msgpack.packb([1, 2, 3])],
    [msgpack.packb({"cmd": "status"})],  # no id: dropped
    [msgpack.packb({"id": 1.5, "cmd": "status"})],
    [b"a", b"b", b"c", b"d"],
    [b"", b""],
    [msgpack.packb({"id": 7, "cmd": "status", "args": [1]})],
    [msgpack.packb({"id": 8, "cmd": 42})],
    [msgpack.packb({"id": 9, "v": 99, "cmd": "status"})],
    [msgpack.packb({"id": 10, "cmd": "boom"})],
    [b"\x00" * 70000],  # over MAXMSGSIZE: libzmq drops the peer's connection
]


def test_garbage_is_counted_and_never_stops_the_server(
    server: ServerThread, tmp_path: Path
) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        for frames in GARBAGE:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(RunDir.endpoint(RunDir(tmp_path).control))
            sock.send_multipart(frames)
            if sock.poll(200):  # an error reply when there was an id to answer
                reply = msgpack.unpackb(sock.recv_multipart()[-1])
                assert reply["ok"] is False
                assert reply["error"]
            sock.close()
    finally:
        ctx.term()
    with ControlClient(tmp_path, timeout=2.0) as client:
        assert client.request("status") == {"pid": 1}
    stats = server.server.stats
    assert stats.dropped >= 6
    assert stats.errors >= 3


def test_unreachable_without_socket_and_without_server(tmp_path: Path) -> None:
    with ControlClient(tmp_path, timeout=0.2) as client, pytest.raises(Unreachable):
        client.request("status")
    # a socket file left behind by a dead supervisor: nobody answers
    RunDir(tmp_path).control.touch()
    with ControlClient(tmp_path, timeout=0.2) as client, pytest.raises(Unreachable):
        client.request("status")
