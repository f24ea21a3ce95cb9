"""The v1beta1.DevicePlugin servicer: the five RPCs of one pool (plugin worker process).

Stateless apart from counters: devices, health and precomputed answers come from
:class:`~sriovdp.workers.plugin.state.PoolState`, device-info files go through
:class:`~sriovdp.workers.plugin.devinfo.DevInfoWriter`. One servicer serves every socket the worker
opens over its life (re-registration opens a new socket, the servicer stays).

The handlers are coroutines of ``grpc.aio`` servers (registered with the generated
``add_DevicePluginServicer_to_server``), all on the worker's one event loop, thread ``grpc-loop``
(:class:`~sriovdp.workers.plugin.server.EventLoopThread`): the work behind each answer is
synchronous and short (Allocate's answers and GetPreferredAllocation's device layout are
precomputed per device list), so it runs right in the handler, with no hop to an executor. A
ListAndWatch stream is a task waiting on a :class:`ChangeSignal`, which the threads that change the
pool (bus thread: link health; main thread: rescans, stop) fire with ``loop.call_soon_threadsafe``;
a client that goes away cancels its task at once. Idle streams cost nothing: no timer, no polling.
A stream ended by :meth:`PoolState.close <sriovdp.workers.plugin.state.PoolState.close>` returns,
so its client sees status OK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.workers.metrics_report import PoolCounters
from sriovdp.workers.plugin.allocation import AllocationError, Prepared
from sriovdp.workers.plugin.devinfo import DevInfoWriter
from sriovdp.workers.plugin.preferred import preferred
from sriovdp.workers.plugin.state import PoolState

log = logging.getLogger(__name__)

OPTIONS = api_pb2.DevicePluginOptions(
    pre_start_required=False, get_preferred_allocation_available=True
)


class ChangeSignal:
    """Broadcast "the pool's view changed" from any thread to the streams on one event loop.

    :meth:`fire` may be called from any thread (it only schedules); the streams, on the loop, take
    :attr:`event` *before* reading the view and wait on it when the view is unchanged. Each firing
    sets the current event and installs a fresh one, so no change between reading the view and
    waiting is lost: the view is swapped before its firing is scheduled, and the firing runs on
    the loop only after the stream awaits.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.event = asyncio.Event()

    def fire(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to wake
            self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()


#: ``grpc.aio.ServicerContext`` (grpcio ships no type hints)
ServicerContext = Any


class DevicePluginServicer(api_pb2_grpc.DevicePluginServicer):
    """The handlers; every one runs on the server's event loop (counters need no lock)."""

    def __init__(
        self, state: PoolState, devinfo: DevInfoWriter, counters: PoolCounters | None = None
    ) -> None:
        self.state = state
        self.devinfo = devinfo
        #: what the metrics child sees of the RPCs (reported on the bus by the worker)
        self.counters = counters or PoolCounters(state.pool.child_name, state.pool.resource)
        self._signal: ChangeSignal | None = None
        self.open_streams = 0
        self.allocations = 0
        self.allocated_ids = 0
        self.refused = 0
        #: Allocate calls that named a device Unhealthy at the time (allocated all the same)
        self.unhealthy_allocations = 0
        #: called (on ``grpc-loop``) with a one-line description of each such call: the worker
        #: shows it as the pool's last event in ``status``
        self.on_unhealthy: Callable[[str], None] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Binds ListAndWatch to ``loop`` (once, before the first server starts)."""
        if self._signal is None:
            self._signal = ChangeSignal(loop)
            self.state.add_waker(self._signal.fire)

    async def GetDevicePluginOptions(
        self, request: api_pb2.Empty, context: ServicerContext
    ) -> api_pb2.DevicePluginOptions:
        return OPTIONS

    async def ListAndWatch(self, request: api_pb2.Empty, context: ServicerContext) -> None:
        signal = self._signal
        assert signal is not None, "attach() before serving"
        self.open_streams += 1
        log.info("ListAndWatch stream opened (%d open)", self.open_streams)
        reason = "client left"
        try:
            view = self.state.view
            await context.write(view.listing)
            while True:
                changed = signal.event  # before reading the view: see ChangeSignal
                new = self.state.view
                if new.closed:
                    reason = "worker stopping"
                    break
                if new.version != view.version:
                    view = new
                    await context.write(view.listing)
                else:
                    await changed.wait()
        # a client that goes away (or a server that stops) cancels this task at once:
        # CancelledError passes through, with the reason "client left"
        except Exception as exc:
            # a write to a client that has just gone: the stream is over either way
            reason = f"client left ({type(exc).__name__})"
        finally:
            self.open_streams -= 1
            log.info("ListAndWatch stream closed: %s (%d open)", reason, self.open_streams)

    async def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: ServicerContext
    ) -> api_pb2.PreferredAllocationResponse:
        self.counters.note_preferred()
        layout = self.state.view.layout
        out = []
        for creq in request.container_requests:
            # the repeated fields go in as they are: the available ids (thousands) are read
            # once, into the set the policy needs
            ids = preferred(
                self.state.pool.allocation_policy,
                layout,
                creq.available_deviceIDs,
                creq.must_include_deviceIDs,
                creq.allocation_size,
            )
            out.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api_pb2.PreferredAllocationResponse(container_responses=out)

    async def Allocate(
        self, request: api_pb2.AllocateRequest, context: ServicerContext
    ) -> api_pb2.AllocateResponse:
        started, ids_before = time.perf_counter(), self.allocated_ids
        unhealthy_before = self.unhealthy_allocations
        try:
            response = self.allocate(request)
        except AllocationError as exc:
            self.counters.note_allocate(exc.code.lower(), time.perf_counter() - started, 0)
            await context.abort(grpc.StatusCode[exc.code], str(exc))
            raise  # not reached: abort raises
        devices = self.allocated_ids - ids_before
        unhealthy = self.unhealthy_allocations != unhealthy_before
        self.counters.note_allocate("ok", time.perf_counter() - started, devices, unhealthy)
        return response

    def allocate(self, request: api_pb2.AllocateRequest) -> api_pb2.AllocateResponse:
        """Allocate's work (synchronous, no I/O but the device-info files); raises
        :class:`AllocationError` for a refused request, before anything is written."""
        view = self.state.view
        table = view.allocation
        try:
            if not request.container_requests:
                raise AllocationError("INVALID_ARGUMENT", "request names no container")
            validated: list[list[Prepared]] = [
                table.validate(creq.devices_ids) for creq in request.container_requests
            ]
        except AllocationError as exc:
            self.refused += 1
            log.info("Allocate refused: %s", exc)
            raise
        unhealthy = [
            e.id for entries in validated for e in entries if not view.healthy.get(e.id, False)
        ]
        if unhealthy:
            self.note_unhealthy(unhealthy)
        response = api_pb2.AllocateResponse(
            container_responses=[table.response(entries) for entries in validated]
        )
        errors = self.devinfo.write(e for entries in validated for e in entries)
        self.allocations += 1
        self.allocated_ids += sum(len(entries) for entries in validated)
        ids = [e.id for entries in validated for e in entries]
        if errors:
            log.warning(
                "Allocate %s; device-info not written (%d failures so far): %s",
                ",".join(ids),
                self.devinfo.failures,
                "; ".join(errors),
            )
        elif log.isEnabledFor(logging.DEBUG):
            # per call at DEBUG only: a formatted, flushed line costs as much as the rest of the
            # call; the worker logs the count at INFO each heartbeat (Worker.log_allocations)
            log.debug("Allocate %s", ",".join(ids))
        return response

    def note_unhealthy(self, ids: list[str]) -> None:
        """An Allocate naming devices that are Unhealthy now: the kubelet chose them while they
        were healthy and a link flapped since. Refusing would fail the pod's admission; the
        original plugin allocates, so do we, loudly."""
        self.unhealthy_allocations += 1
        described = "; ".join(f"{i} is {self.state.describe_health(i)}" for i in ids)
        log.warning(
            "Allocate of a device that is not healthy (allocated all the same): %s", described
        )
        if self.on_unhealthy is not None:
            self.on_unhealthy(
                f"allocated unhealthy {','.join(ids)} "
                f"({self.unhealthy_allocations} such Allocate calls)"
            )

    async def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: ServicerContext
    ) -> api_pb2.PreStartContainerResponse:
        return api_pb2.PreStartContainerResponse()
