"""A kubelet stand-in speaking the real v1beta1 API over unix sockets (tests, demo, benchmarks).

Owns ``<plugin-dir>/kubelet.sock`` and the plugin connections it dials. Behaves like the kubelet's
device manager where plugins can tell: ``Register`` is answered only after dialling the plugin back
and calling ``GetDevicePluginOptions``, then a ListAndWatch stream is read in a thread and the
latest list is kept per resource; a second registration of a resource replaces the first
connection; a stream that ends drops the resource's allocatable count to 0; :meth:`restart`
deletes every unix socket in the directory (keeping regular files) and serves a new
``kubelet.sock``, as a kubelet restart does.

It keeps a device checkpoint as the kubelet does, ``kubelet_internal_checkpoint`` in the plugin
directory in the kubelet's JSON format (written to a temp file and renamed over the old one): an
entry per successful :meth:`~KubeletStandIn.allocate` (pod UID, container, resource, ids by NUMA
node, the base64 answer), rewritten after every allocation, :meth:`~KubeletStandIn.delete_pod`
and device list update. ``checkpoint_format="v1"`` writes ``DeviceIDs`` as a plain list, as
kubelets before 1.20 did. Its ``Checksum`` is a stand-in value (the kubelet's hashes Go structs).

It imports grpc: nothing in the supervisor may import it at module level. Usable in-process
(:class:`KubeletStandIn`) or alone: ``python -m sriovdp.simnode.kubelet --plugin-dir D``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import stat
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sriovdp.proto import api_pb2, api_pb2_grpc

KUBELET_SOCKET = "kubelet.sock"
#: the kubelet's default ``maxPods``
MAX_PODS = 110
CHECKPOINT = "kubelet_internal_checkpoint"
DIAL_TIMEOUT_S = 10.0
HISTORY = 100


@dataclass(frozen=True, slots=True)
class Registration:
    """One accepted Register call."""

    resource: str
    endpoint: str
    time: float  # time.monotonic() when Register was answered
    generation: int  # the stand-in's start count when it happened
    options: api_pb2.DevicePluginOptions


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device of a plugin's latest ListAndWatch list."""

    id: str
    health: str
    numa: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PodDevices:
    """One checkpoint entry: the devices of one resource a pod's container holds."""

    pod_uid: str
    container: str
    resource: str
    ids: tuple[str, ...]
    numa: tuple[int, ...]  # per id, -1 without topology
    alloc_resp: bytes


@dataclass(slots=True)
class _Connection:
    """The stand-in's connection to one registered plugin."""

    resource: str
    endpoint: str
    channel: grpc.Channel
    stub: api_pb2_grpc.DevicePluginStub
    devices: list[DeviceInfo] = field(default_factory=list)
    lists: int = 0  # ListAndWatch messages received
    history: list[list[DeviceInfo]] = field(default_factory=list)  # the first HISTORY lists
    alive: bool = True
    call: Any = None
    thread: threading.Thread | None = None


class _RegistrationServicer(api_pb2_grpc.RegistrationServicer):
    def __init__(self, owner: KubeletStandIn) -> None:
        self.owner = owner

    def Register(
        self, request: api_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> api_pb2.Empty:
        problem = self.owner.register(request)
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        return api_pb2.Empty()


def unix_sockets(directory: Path) -> list[Path]:
    out = []
    for entry in os.scandir(directory):
        try:
            if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                out.append(Path(entry.path))
        except FileNotFoundError:
            pass
    return out


class KubeletStandIn:
    """The device manager's side of the v1beta1 API, for one plugin directory."""

    def __init__(self, plugin_dir: Path, start: bool = True, checkpoint_format: str = "v2") -> None:
        self.plugin_dir = Path(plugin_dir)
        self.generation = 0
        self.registrations: list[Registration] = []
        self.refused: list[str] = []
        self.checkpoint_format = checkpoint_format
        #: False: the checkpoint file is left alone (a test that puts its own there)
        self.checkpoints = True
        self.pods: list[PodDevices] = []
        self._cond = threading.Condition()
        self._checkpoint_lock = threading.Lock()
        self._conns: dict[str, _Connection] = {}
        self._server: grpc.Server | None = None
        if start:
            self.start()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    def start(self) -> None:
        """Serves Registration on a new ``kubelet.sock``."""
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        api_pb2_grpc.add_RegistrationServicer_to_server(_RegistrationServicer(self), server)  # type: ignore[no-untyped-call]
        if server.add_insecure_port(f"unix:{self.socket}") == 0:
            raise OSError(f"cannot bind {self.socket}")
        server.start()
        with self._cond:
            self._server = server
            self.generation += 1
            self._cond.notify_all()

    def _drop_connections(self) -> None:
        with self._cond:
            conns = list(self._conns.values())
            for conn in conns:
                conn.alive = False
            self._cond.notify_all()
        for conn in conns:
            _close(conn)

    def stop(self) -> None:
        """Stops serving and drops every plugin connection (kubelet.sock is removed)."""
        with self._cond:
            server, self._server = self._server, None
        if server is not None:
            server.stop(grace=0).wait(2)
        self._drop_connections()
        try:
            if stat.S_ISSOCK(os.lstat(self.socket).st_mode):
                os.unlink(self.socket)
        except OSError:
            pass

    def restart(self) -> None:
        """Like a kubelet restart: connections gone, every unix socket deleted, new kubelet.sock."""
        self.stop()
        for path in unix_sockets(self.plugin_dir):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.start()

    # -- Register --------------------------------------------------------------------------------

    def register(self, request: api_pb2.RegisterRequest) -> str | None:
        """Handles one Register: dial back, options, ListAndWatch. Returns a refusal or None."""
        problem = None
        if request.version != "v1beta1":
            problem = f"unsupported version {request.version!r}"
        elif "/" not in request.resource_name or "kubernetes.io/" in request.resource_name:
            problem = f"invalid resource name {request.resource_name!r}"
        elif not request.endpoint or "/" in request.endpoint:
            problem = f"invalid endpoint {request.endpoint!r}"
        if problem is not None:
            self.refused.append(problem)
            return problem
        channel = grpc.insecure_channel(f"unix:{self.plugin_dir / request.endpoint}")
        stub = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
        try:
            options = stub.GetDevicePluginOptions(
                api_pb2.Empty(), timeout=DIAL_TIMEOUT_S, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            channel.close()
            problem = f"cannot dial plugin {request.endpoint}: {exc.code().name}"
            self.refused.append(problem)
            return problem
        conn = _Connection(request.resource_name, request.endpoint, channel, stub)
        conn.call = stub.ListAndWatch(api_pb2.Empty())
        # the registration is recorded in the same step that makes the connection visible, and
        # before its first list can arrive: a waiter that sees the new endpoint listed also sees
        # its registration (it was appended after the watch thread started, a window under load)
        with self._cond:
            old = self._conns.get(request.resource_name)
            self._conns[request.resource_name] = conn
            if old is not None:
                old.alive = False
            self.registrations.append(
                Registration(
                    request.resource_name,
                    request.endpoint,
                    time.monotonic(),
                    self.generation,
                    options,
                )
            )
            self._cond.notify_all()
        if old is not None:
            _close(old)
        conn.thread = threading.Thread(
            target=self._watch, args=(conn,), name=f"law-{request.resource_name}", daemon=True
        )
        conn.thread.start()
        return None

    def _watch(self, conn: _Connection) -> None:
        try:
            for response in conn.call:
                devices = [
                    DeviceInfo(d.ID, d.health, tuple(n.ID for n in d.topology.nodes))
                    for d in response.devices
                ]
                with self._cond:
                    current = self._conns.get(conn.resource) is conn
                    if current:
                        conn.devices = devices
                        conn.lists += 1
                        if len(conn.history) < HISTORY:
                            conn.history.append(devices)
                        self._cond.notify_all()
                if current:
                    self.write_checkpoint()  # as the kubelet does after every device update
        except grpc.RpcError:
            pass
        finally:
            with self._cond:
                conn.alive = False
                self._cond.notify_all()

    # -- what the kubelet knows ------------------------------------------------------------------

    def allocatable(self) -> dict[str, int]:
        """Healthy devices per resource; 0 for a resource whose stream ended."""
        with self._cond:
            return {
                r: (sum(1 for d in c.devices if d.health == "Healthy") if c.alive else 0)
                for r, c in self._conns.items()
            }

    def devices(self, resource: str) -> list[DeviceInfo]:
        with self._cond:
            conn = self._conns.get(resource)
            return list(conn.devices) if conn is not None else []

    def connected(self, resource: str) -> bool:
        """Registered and the ListAndWatch stream is open."""
        with self._cond:
            conn = self._conns.get(resource)
            return conn is not None and conn.alive

    def history(self, resource: str) -> list[list[DeviceInfo]]:
        """The first lists received on the current connection of ``resource``, oldest first."""
        with self._cond:
            conn = self._conns.get(resource)
            return list(conn.history) if conn is not None else []

    def lists_received(self, resource: str) -> int:
        with self._cond:
            conn = self._conns.get(resource)
            return conn.lists if conn is not None else 0

    def endpoint(self, resource: str) -> str | None:
        with self._cond:
            conn = self._conns.get(resource)
            return conn.endpoint if conn is not None else None

    def wait_for(self, predicate: Callable[[KubeletStandIn], bool], timeout: float) -> bool:
        """Waits until ``predicate(self)`` holds (re-checked on every change); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))

    # -- the device checkpoint ------------------------------------------------------------------

    @property
    def checkpoint(self) -> Path:
        return self.plugin_dir / CHECKPOINT

    def checkpoint_document(self) -> dict[str, Any]:
        """The checkpoint as the kubelet's ``json.Marshal`` writes it."""
        with self._cond:
            pods = list(self.pods)
            registered = {r: [d.id for d in c.devices] for r, c in self._conns.items()}
        entries = []
        for pod in pods:
            ids: Any
            if self.checkpoint_format == "v1":
                ids = list(pod.ids)
            else:
                ids = {}
                for device_id, numa in zip(pod.ids, pod.numa, strict=True):
                    ids.setdefault(str(numa), []).append(device_id)
            entries.append(
                {
                    "PodUID": pod.pod_uid,
                    "ContainerName": pod.container,
                    "ResourceName": pod.resource,
                    "DeviceIDs": ids,
                    "AllocResp": base64.b64encode(pod.alloc_resp).decode(),
                }
            )
        # Go writes an empty slice as null
        data = {"PodDeviceEntries": entries or None, "RegisteredDevices": registered}
        checksum = zlib.crc32(json.dumps(data, sort_keys=True).encode())
        return {"Data": data, "Checksum": checksum}

    def write_checkpoint(self) -> None:
        """Writes the checkpoint through a temp file and a rename, as the kubelet does."""
        with self._checkpoint_lock:
            body = json.dumps(self.checkpoint_document()).encode()
            if not self.checkpoints or not self.plugin_dir.is_dir():
                return
            tmp = self.plugin_dir / f".{CHECKPOINT}.tmp"
            tmp.write_bytes(body)
            os.replace(tmp, self.checkpoint)

    def held(self, resource: str) -> set[str]:
        """Device ids of ``resource`` that pods hold (what the checkpoint lists)."""
        with self._cond:
            return {i for p in self.pods if p.resource == resource for i in p.ids}

    def delete_pod(self, pod_uid: str) -> None:
        """The pod is gone: its entries leave the checkpoint."""
        with self._cond:
            self.pods = [p for p in self.pods if p.pod_uid != pod_uid]
        self.write_checkpoint()

    # -- calls the kubelet makes -----------------------------------------------------------------

    def stub(self, resource: str) -> api_pb2_grpc.DevicePluginStub:
        with self._cond:
            conn = self._conns.get(resource)
        if conn is None:
            raise KeyError(f"{resource} is not registered")
        return conn.stub

    def allocate(
        self,
        resource: str,
        ids: Sequence[str],
        timeout: float = 5.0,
        *,
        pod_uid: str | None = None,
        container: str = "c0",
        record: bool = True,
    ) -> api_pb2.ContainerAllocateResponse:
        """One container's Allocate; raises grpc.RpcError when the plugin refuses. On success
        the allocation is recorded in the checkpoint under ``pod_uid`` (a new one if None);
        ``record=False`` leaves it out, as a kubelet that has not written it yet."""
        request = api_pb2.AllocateRequest(
            container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=list(ids))]
        )
        response = self.stub(resource).Allocate(request, timeout=timeout)
        answer: api_pb2.ContainerAllocateResponse = response.container_responses[0]
        if record:
            numa = {d.id: (d.numa[0] if d.numa else -1) for d in self.devices(resource)}
            entry = PodDevices(
                pod_uid or str(uuid.uuid4()),
                container,
                resource,
                tuple(ids),
                tuple(numa.get(i, -1) for i in ids),
                answer.SerializeToString(),
            )
            with self._cond:  # the kubelet keeps one entry per pod, container and resource
                self.pods = [
                    p
                    for p in self.pods
                    if (p.pod_uid, p.container, p.resource) != (entry.pod_uid, container, resource)
                ]
                self.pods.append(entry)
                # a node runs at most MAX_PODS pods: a loop that allocates for ever (benchmarks,
                # chaos) sees the oldest pods go, as pods do, and a checkpoint of a node's size
                del self.pods[: max(0, len(self.pods) - MAX_PODS)]
            self.write_checkpoint()
        return answer

    def preferred(
        self,
        resource: str,
        available: Sequence[str],
        must_include: Sequence[str],
        size: int,
        timeout: float = 5.0,
    ) -> list[str]:
        request = api_pb2.PreferredAllocationRequest(
            container_requests=[
                api_pb2.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available),
                    must_include_deviceIDs=list(must_include),
                    allocation_size=size,
                )
            ]
        )
        response = self.stub(resource).GetPreferredAllocation(request, timeout=timeout)
        return list(response.container_responses[0].deviceIDs)


def _close(conn: _Connection) -> None:
    if conn.call is not None:
        conn.call.cancel()
    conn.channel.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a stand-in until SIGTERM/SIGINT, printing every change of allocatable counts."""
    parser = argparse.ArgumentParser(prog="python -m sriovdp.simnode.kubelet")
    parser.add_argument("--plugin-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kubelet = KubeletStandIn(args.plugin_dir)
    print(f"kubelet stand-in serving {kubelet.socket}", flush=True)
    last: dict[str, int] = {}
    while not stop.wait(0.2):
        now = kubelet.allocatable()
        if now != last:
            print(" ".join(f"{r}={n}" for r, n in sorted(now.items())), flush=True)
            last = now
    kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
