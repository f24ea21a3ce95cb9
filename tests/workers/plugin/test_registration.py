"""Registrar against a real Registration server (grpcio's synchronous server, a thread pool) on a
unix socket in the test process; the registrar is a task on an event loop in a thread and calls
Register with grpc.aio: abandoning a stale call, stop, retries after BackoffPolicy delays, and a
Register held by the kubelet while the same loop serves the kubelet's calls."""

from __future__ import annotations

import logging
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.workers.plugin import registration
from sriovdp.workers.plugin.registration import Registrar, RegistrationStatus
from sriovdp.workers.plugin.server import EventLoopThread


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


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.stop()


def until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def stale_kubelet_socket(plugin_dir: Path) -> None:
    """kubelet.sock exists but nobody listens (a kubelet that died): UNAVAILABLE at once."""
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(plugin_dir / "kubelet.sock"))
    stale.close()


def serve(plugin_dir: Path, servicer: StallingKubelet) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    api_pb2_grpc.add_RegistrationServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix:{plugin_dir / 'kubelet.sock'}")
    server.start()
    return server


def test_a_new_endpoint_abandons_the_register_call_stuck_on_the_old_one(
    plugin_dir: Path, loop: EventLoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without abandoning it, the registrar would wait out the call's whole deadline
    monkeypatch.setattr(registration, "REGISTER_TIMEOUT_S", 300.0)
    kubelet = StallingKubelet(stall={"old.sock"})
    server = serve(plugin_dir, kubelet)
    changes: list[RegistrationStatus] = []
    registrar = Registrar(plugin_dir, "example.com/pool", changes.append)
    registrar.start(loop.loop)
    try:
        registrar.want("old.sock")
        registrar.first_attempt_done.wait(0.5)  # the old call is in flight (or about to be)
        registrar.want("new.sock")
        with kubelet.cond:
            assert kubelet.cond.wait_for(lambda: "new.sock" in kubelet.registered, 30)
            assert kubelet.cond.wait_for(lambda: "old.sock" in kubelet.cancelled, 30)
        assert until(lambda: registrar.registered)  # answered; the registrar records it next
        assert registrar.registered_endpoint == "new.sock"
        assert [c.endpoint for c in changes if c.registered] == ["new.sock"]
    finally:
        registrar.stop()
        server.stop(0).wait(5)


def test_stop_abandons_the_register_call_in_flight(
    plugin_dir: Path, loop: EventLoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registration, "REGISTER_TIMEOUT_S", 300.0)
    kubelet = StallingKubelet(stall={"stuck.sock"})
    server = serve(plugin_dir, kubelet)
    registrar = Registrar(plugin_dir, "example.com/pool", lambda status: None)
    registrar.start(loop.loop)
    try:
        registrar.want("stuck.sock")
        with kubelet.cond:
            assert kubelet.cond.wait_for(lambda: "stuck.sock" in kubelet.arrived, 30)
        t0 = time.monotonic()
        registrar.stop()  # returns once the task has ended
        assert registrar.done and time.monotonic() - t0 < registration.STOP_TIMEOUT_S
        with kubelet.cond:  # the kubelet sees the call end at once, not after 300 s
            assert kubelet.cond.wait_for(lambda: "stuck.sock" in kubelet.cancelled, 30)
        assert not registrar.registered
    finally:
        registrar.stop()
        server.stop(0).wait(5)


def test_failures_are_retried_with_their_reason(plugin_dir: Path, loop: EventLoopThread) -> None:
    """UNAVAILABLE (nobody listens on kubelet.sock), retried until a kubelet serves there."""
    stale_kubelet_socket(plugin_dir)
    changes: list[RegistrationStatus] = []
    registrar = Registrar(
        plugin_dir, "example.com/pool", changes.append, BackoffPolicy(base=0.01, cap=0.05)
    )
    registrar.start(loop.loop)
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
        assert until(lambda: registrar.registered) and changes[-1].registered
    finally:
        registrar.stop()
        if server is not None:
            server.stop(0).wait(5)


def test_retry_delays_are_the_backoff_policys(
    plugin_dir: Path, loop: EventLoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Delays double from ``base`` up to ``cap`` (BackoffPolicy.delay, no jitter here); each
    attempt waits its delay; a kick retries at once and starts over from ``base``."""
    caplog.set_level(logging.DEBUG, logger=registration.__name__)
    stale_kubelet_socket(plugin_dir)
    policy = BackoffPolicy(base=0.1, factor=2.0, cap=0.4, jitter=0.0)
    registrar = Registrar(plugin_dir, "example.com/pool", lambda status: None, policy)
    registrar.start(loop.loop)

    def delays() -> list[float]:
        return [
            float(m.group(1))
            for r in caplog.records
            if (m := re.search(r"retrying in ([0-9.]+)s", r.getMessage()))
        ]

    def times() -> list[float]:
        return [r.created for r in caplog.records if "retrying in" in r.getMessage()]

    try:
        registrar.want("p.sock")
        assert until(lambda: len(delays()) >= 5)
        assert delays()[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
        gaps = [b - a for a, b in zip(times(), times()[1:], strict=False)][:4]
        assert all(gap >= want - 0.01 for gap, want in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=True))
        seen = len(delays())
        assert registrar.kick()
        assert until(lambda: len(delays()) > seen)
        assert delays()[seen] == 0.1
    finally:
        registrar.stop()


def test_a_register_held_by_the_kubelet_does_not_block_serving(
    plugin_dir: Path, loop: EventLoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet holds Register while it calls us back; ours answers on the same loop."""
    from sriovdp.workers.plugin.allocation import AllocationTable
    from sriovdp.workers.plugin.devinfo import DevInfoWriter
    from sriovdp.workers.plugin.drivers import DriverContext
    from sriovdp.workers.plugin.server import PluginServer
    from sriovdp.workers.plugin.servicer import DevicePluginServicer
    from sriovdp.workers.plugin.state import PoolState
    from tests.workers.plugin.factories import pool, vf

    p = pool()
    state = PoolState(
        p, [vf(0, 0)], lambda devs: AllocationTable(p, devs, DriverContext(Path("/nonexistent")))
    )
    servicer = DevicePluginServicer(state, DevInfoWriter(plugin_dir / "devinfo"))
    plugin = PluginServer(plugin_dir, "example-com_net", servicer, loop)
    serving = plugin.start()
    answered: list[float] = []

    class DialingBack(StallingKubelet):
        def Register(self, request: api_pb2.RegisterRequest, context: Any) -> api_pb2.Empty:
            with grpc.insecure_channel(f"unix:{plugin_dir / request.endpoint}") as ch:
                stub: Any = api_pb2_grpc.DevicePluginStub(ch)  # type: ignore[no-untyped-call]
                for _ in range(20):  # for 2 s, while our Register call waits
                    t0 = time.monotonic()
                    stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=5)
                    answered.append(time.monotonic() - t0)
                    time.sleep(0.1)
            return super().Register(request, context)

    kubelet = DialingBack(stall=set())
    server = serve(plugin_dir, kubelet)
    registrar = Registrar(plugin_dir, p.resource, lambda status: None)
    registrar.start(loop.loop)
    try:
        registrar.want(serving.name)
        assert until(lambda: registrar.registered)
        assert len(answered) == 20 and max(answered) < 1.0
    finally:
        registrar.stop()
        server.stop(0).wait(5)
        state.close()
        plugin.stop(grace=0)
