"""The v1beta1.DevicePlugin servicer: the five RPCs of one pool (plugin worker process).

Stateless apart from counters: devices, health and precomputed answers come from
:class:`~sriovdp.workers.plugin.state.PoolState`, device-info files go through
:class:`~sriovdp.workers.plugin.devinfo.DevInfoWriter`. One servicer serves every socket the worker
opens over its life (re-registration opens a new socket, the servicer stays).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc

from sriovdp.proto import api_pb2, api_pb2_grpc
from sriovdp.workers.plugin.allocation import AllocationError, Prepared
from sriovdp.workers.plugin.devinfo import DevInfoWriter
from sriovdp.workers.plugin.preferred import preferred
from sriovdp.workers.plugin.state import PoolState

log = logging.getLogger(__name__)

#: a quiet stream re-checks its client this often (no timer at all would also work: departing
#: clients wake it through their callback); keeps idle CPU at nothing
STREAM_RECHECK_S = 60.0

OPTIONS = api_pb2.DevicePluginOptions(
    pre_start_required=False, get_preferred_allocation_available=True
)


class DevicePluginServicer(api_pb2_grpc.DevicePluginServicer):
    def __init__(self, state: PoolState, devinfo: DevInfoWriter) -> None:
        self.state = state
        self.devinfo = devinfo
        self._lock = threading.Lock()
        self.open_streams = 0
        self.allocations = 0
        self.allocated_ids = 0
        self.refused = 0

    def GetDevicePluginOptions(
        self, request: api_pb2.Empty, context: grpc.ServicerContext
    ) -> api_pb2.DevicePluginOptions:
        return OPTIONS

    def ListAndWatch(
        self, request: api_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[api_pb2.ListAndWatchResponse]:
        gone = threading.Event()

        def left() -> None:
            gone.set()
            self.state.wake()

        if not context.add_callback(left):
            return
        with self._lock:
            self.open_streams += 1
            opened = self.open_streams
        log.info("ListAndWatch stream opened (%d open)", opened)
        reason = "client left"
        try:
            view = self.state.view
            yield view.listing
            while True:
                new = self.state.wait_change(view.version, gone.is_set, STREAM_RECHECK_S)
                if gone.is_set() or not context.is_active():
                    break
                if new.closed:
                    reason = "worker stopping"
                    break
                if new.version != view.version:
                    view = new
                    yield view.listing
        finally:
            with self._lock:
                self.open_streams -= 1
                still = self.open_streams
            log.info("ListAndWatch stream closed: %s (%d open)", reason, still)

    def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreferredAllocationResponse:
        view = self.state.view
        out = []
        for creq in request.container_requests:
            ids = preferred(
                self.state.pool.allocation_policy,
                view.devices,
                list(creq.available_deviceIDs),
                list(creq.must_include_deviceIDs),
                creq.allocation_size,
            )
            out.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api_pb2.PreferredAllocationResponse(container_responses=out)

    def Allocate(
        self, request: api_pb2.AllocateRequest, context: grpc.ServicerContext
    ) -> api_pb2.AllocateResponse:
        view = self.state.view
        table = view.allocation
        try:
            if not request.container_requests:
                raise AllocationError("INVALID_ARGUMENT", "request names no container")
            validated: list[list[Prepared]] = [
                table.validate(creq.devices_ids, view.healthy)
                for creq in request.container_requests
            ]
        except AllocationError as exc:
            with self._lock:
                self.refused += 1
            log.info("Allocate refused: %s", exc)
            context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
            raise  # not reached: abort raises
        response = api_pb2.AllocateResponse(
            container_responses=[table.response(entries) for entries in validated]
        )
        errors = self.devinfo.write(e for entries in validated for e in entries)
        with self._lock:
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

    def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreStartContainerResponse:
        return api_pb2.PreStartContainerResponse()
