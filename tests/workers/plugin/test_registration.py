"""Registrar against a real Registration server (grpcio, the independent peer) on a unix socket
in the test process; the registrar itself speaks gRPC through sriovdp.workers.grpcwire."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.workers.plugin import registration
from sriovdp.workers.plugin.registration import Registrar, RegistrationStatus


class StallingKubelet(api_pb2_grpc.RegistrationServicer):
    """Answers Register at once, except for ``stall`` endpoints: those hang until cancelled
    (as a real kubelet hangs dialling back a socket that no longer exists)."""

    def __init__(self, stall: set[str]) -> None:
        self.stall = stall
        self.registered: list[str] = []
        self.arrived: list[str] = []
        self.cancelled: list[str] = []
        self.cond = threading.Condition()

    def Register(self, request: api_pb2.RegisterRequest, context: Any) -> api_pb2.Empty:
        with self.cond:
            self.arrived.append(request.endpoint)
            self.cond.notify_all()
        if request.endpoint in self.stall:
            gone = threading.Event()
            context.add_callback(gone.set)
            gone.wait(60)
            with self.cond:
                self.cancelled.append(request.endpoint)
                self.cond.notify_all()
            return api_pb2.Empty()
        with self.cond:
            self.registered.append(request.endpoint)
            self.cond.notify_all()
        return api_pb2.Empty()


@pytest.fixture
def plugin_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sdp-reg-", dir="/tmp") as d:
        yield Path(d)


def serve(plugin_dir: Path, servicer: StallingKubelet) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_RegistrationServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{plugin_dir / 'kubelet.sock'}")
    server.start()
    return server


def test_a_new_endpoint_abandons_the_register_call_stuck_on_the_old_one(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without abandoning it, the thread would wait out the call's whole deadline
    monkeypatch.setattr(registration, "REGISTER_TIMEOUT_S", 300.0)
    kubelet = StallingKubelet(stall={"old.sock"})
    server = serve(plugin_dir, kubelet)
    changes: list[RegistrationStatus] = []
    registrar = Registrar(plugin_dir, "example.com/pool", changes.append)
    registrar.start()
    try:
        registrar.want("old.sock")
        registrar.first_attempt_done.wait(0.5)  # the old call is in flight (or about to be)
        registrar.want("new.sock")
        with kubelet.cond:
            assert kubelet.cond.wait_for(lambda: "new.sock" in kubelet.registered, 30)
            assert kubelet.cond.wait_for(lambda: "old.sock" in kubelet.cancelled, 30)
        deadline = time.monotonic() + 30
        while not registrar.registered and time.monotonic() < deadline:
            time.sleep(0.01)  # the server answered; the registrar thread records it next
        assert registrar.registered_endpoint == "new.sock"
        assert [c.endpoint for c in changes if c.registered] == ["new.sock"]
    finally:
        registrar.stop()
        server.stop(0).wait(5)


def test_stop_abandons_the_register_call_in_flight(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registration, "REGISTER_TIMEOUT_S", 300.0)
    kubelet = StallingKubelet(stall={"stuck.sock"})
    server = serve(plugin_dir, kubelet)
    registrar = Registrar(plugin_dir, "example.com/pool", lambda status: None)
    registrar.start()
    try:
        registrar.want("stuck.sock")
        with kubelet.cond:
            assert kubelet.cond.wait_for(lambda: "stuck.sock" in kubelet.arrived, 30)
        registrar.stop()
        with kubelet.cond:  # the kubelet sees the call end at once, not after 300 s
            assert kubelet.cond.wait_for(lambda: "stuck.sock" in kubelet.cancelled, 30)
        registrar._thread.join(30)
        assert not registrar._thread.is_alive() and not registrar.registered
    finally:
        registrar.stop()
        server.stop(0).wait(5)


def test_failures_are_retried_with_their_reason(plugin_dir: Path) -> None:
    """kubelet.sock exists but nobody listens (a kubelet that died): UNAVAILABLE, retried until a
    kubelet serves on that path."""
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(plugin_dir / "kubelet.sock"))
    stale.close()
    changes: list[RegistrationStatus] = []
    registrar = Registrar(
        plugin_dir, "example.com/pool", changes.append, registration.Backoff(first=0.01, cap=0.05)
    )
    registrar.start()
    server = None
    try:
        registrar.want("p.sock")
        assert registrar.first_attempt_done.wait(30)
        assert not changes[0].registered and "UNAVAILABLE" in changes[0].reason
        (plugin_dir / "kubelet.sock").unlink()
        kubelet = StallingKubelet(stall=set())
        server = serve(plugin_dir, kubelet)
        with kubelet.cond:
            assert kubelet.cond.wait_for(lambda: "p.sock" in kubelet.registered, 30)
        deadline = time.monotonic() + 30
        while not registrar.registered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert registrar.registered and changes[-1].registered
    finally:
        registrar.stop()
        if server is not None:
            server.stop(0).wait(5)
