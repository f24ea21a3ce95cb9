"""Fixtures for the grpcwire tests: our Server on a real unix socket, its asyncio loop in a
thread of the test process, serving a DevicePlugin servicer whose behaviour the request picks.

grpcio is the independent peer: the tests talk to our server with grpcio's clients (and with
raw sockets), and our client talks to grpcio servers.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.workers.grpcwire.connection import ServicerContext
from sriovdp.workers.grpcwire.methods import service_methods
from sriovdp.workers.grpcwire.server import Server
from sriovdp.workers.grpcwire.status import StatusCode

T = TypeVar("T")

SERVICE = api_pb2.DESCRIPTOR.services_by_name["DevicePlugin"]
#: the receive limit of the test server: small, so oversized requests are cheap to send
MAX_RECEIVE = 64 * 1024


def listing(count: int, tag: str = "") -> api_pb2.ListAndWatchResponse:
    """A ListAndWatch answer of ``count`` devices (4096 of them: about 120 KB)."""
    return api_pb2.ListAndWatchResponse(
        devices=[
            api_pb2.Device(
                ID=f"0000:{i // 256:02x}:{(i // 8) % 32:02x}.{i % 8}{tag}",
                health="Healthy",
                topology=api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=i % 2)]),
            )
            for i in range(count)
        ]
    )


@dataclass
class Recorder:
    """What the handlers saw, shared with the test thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: list[str] = field(default_factory=list)
    finished: list[tuple[str, str]] = field(default_factory=list)  # (what, how it ended)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def start(self, what: str) -> None:
        with self.changed:
            self.started.append(what)
            self.changed.notify_all()

    def finish(self, what: str, how: str) -> None:
        with self.changed:
            self.finished.append((what, how))
            self.changed.notify_all()

    def wait(self, predicate: Any, timeout: float = 30.0) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(predicate, timeout))


class TestServicer:
    """DevicePlugin handlers driven by the request:

    - Allocate: the first container's device ids are commands: ``abort:<CODE>:<details>``,
      ``sleep:<seconds>``, ``raise``, ``big:<n>`` (an answer of n bytes of env); else an echo;
    - ListAndWatch: writes the lists put on :attr:`feed` (``None`` ends the stream);
    - GetPreferredAllocation: the available ids reversed, cut to the size.
    """

    __test__ = False

    def __init__(self, loop: asyncio.AbstractEventLoop, recorder: Recorder) -> None:
        self.loop = loop
        self.rec = recorder
        self.feeds: list[asyncio.Queue[api_pb2.ListAndWatchResponse | None]] = []
        self.initial = listing(3)

    async def GetDevicePluginOptions(
        self, request: api_pb2.Empty, context: ServicerContext
    ) -> api_pb2.DevicePluginOptions:
        return api_pb2.DevicePluginOptions(get_preferred_allocation_available=True)

    async def ListAndWatch(self, request: api_pb2.Empty, context: ServicerContext) -> None:
        queue: asyncio.Queue[api_pb2.ListAndWatchResponse | None] = asyncio.Queue()
        self.feeds.append(queue)
        self.rec.start("ListAndWatch")
        how = "returned"
        try:
            await context.write(self.initial)
            while (item := await queue.get()) is not None:
                await context.write(item)
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        finally:
            self.feeds.remove(queue)
            self.rec.finish("ListAndWatch", how)

    def push(self, item: api_pb2.ListAndWatchResponse | None) -> None:
        """From any thread: one more list (or the end) for every open stream."""

        def put() -> None:
            for q in self.feeds:
                q.put_nowait(item)

        self.loop.call_soon_threadsafe(put)

    async def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: ServicerContext
    ) -> api_pb2.PreferredAllocationResponse:
        return api_pb2.PreferredAllocationResponse(
            container_responses=[
                api_pb2.ContainerPreferredAllocationResponse(
                    deviceIDs=list(reversed(c.available_deviceIDs))[: c.allocation_size]
                )
                for c in request.container_requests
            ]
        )

    async def Allocate(
        self, request: api_pb2.AllocateRequest, context: ServicerContext
    ) -> api_pb2.AllocateResponse:
        ids = list(request.container_requests[0].devices_ids) if request.container_requests else []
        command = ids[0] if ids else ""
        self.rec.start(command)
        how = "returned"
        try:
            if command.startswith("abort:"):
                _, code, details = command.split(":", 2)
                context.abort(StatusCode[code], details)
            if command.startswith("sleep:"):
                await asyncio.sleep(float(command.split(":")[1]))
            if command == "raise":
                raise RuntimeError("the handler failed on purpose")
            env = {"IDS": ",".join(ids)}
            if command.startswith("big:"):
                env["BIG"] = "x" * int(command.split(":")[1])
            return api_pb2.AllocateResponse(
                container_responses=[api_pb2.ContainerAllocateResponse(envs=env)]
            )
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        finally:
            self.rec.finish(command, how)

    async def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: ServicerContext
    ) -> api_pb2.PreStartContainerResponse:
        return api_pb2.PreStartContainerResponse()


class Served:
    """Our Server on ``path``, its loop in a thread; :meth:`call` runs coroutines there."""

    def __init__(self, base: Path) -> None:
        self.path = base / "dp.sock"
        self.loop = asyncio.new_event_loop()
        self.loop_tid = 0
        ready = threading.Event()

        def run() -> None:
            self.loop_tid = threading.get_native_id()
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="test-loop", daemon=True)
        self.thread.start()
        ready.wait(10)
        self.rec = Recorder()
        self.servicer = TestServicer(self.loop, self.rec)
        self.server = Server(service_methods(SERVICE, self.servicer), max_receive_bytes=MAX_RECEIVE)
        self.call(self.server.start(self.path))
        self.channels: list[grpc.Channel] = []

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(f"unix:{self.path}")
        self.channels.append(ch)
        return ch

    def stub(self) -> Any:
        return api_pb2_grpc.DevicePluginStub(self.channel())  # type: ignore[no-untyped-call]

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        try:
            self.call(self.server.stop(0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gw", dir="/tmp"))  # unix socket paths stay short
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(base: Path) -> Iterator[Served]:
    s = Served(base)
    try:
        yield s
    finally:
        s.close()
