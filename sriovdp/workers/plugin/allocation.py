"""Precomputed Allocate answers (plugin worker process: built in ``MainThread``, read by the
Allocate handler on ``grpc-loop``).

Everything Allocate returns about a device is known before the call: env fragments, ``_INFO``
JSON, device specs, CDI names and the NPWG device-info file body. :class:`AllocationTable` builds
them once per device set (start and rescans); per request, Allocate only validates ids and joins
the pieces. The table is immutable: a rescan builds a new one and swaps it in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sriovdp.proto import api_pb2
from sriovdp.shared.model import PoolConfig, PoolDevice, env_name
from sriovdp.workers.plugin.drivers import DriverContext, Spec, families_for

log = logging.getLogger(__name__)

#: the kubelet's Device ID limit; longer ids are never ours
MAX_ID_LENGTH = 63
NPWG_VERSION = "1.1.0"


@dataclass(frozen=True, slots=True)
class Prepared:
    """One device's share of an Allocate answer."""

    id: str
    families: tuple[str, ...]
    specs: tuple[Spec, ...]
    spec_messages: tuple[api_pb2.DeviceSpec, ...]
    info_fragment: str  # '"<id>": {...}' ready to join into the _INFO object
    info: Mapping[str, Any]
    devinfo_name: str  # file name in the device-info directory
    devinfo_body: bytes | None  # None: the device gets no device-info file (auxiliary devices)
    cdi_name: str  # fully qualified "<kind>=<id>"


class AllocationError(Exception):
    """A refused request; ``code`` is the gRPC status name to answer with (a
    ``grpc.StatusCode`` member name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def show_id(value: str) -> str:
    """An id for an error message: quoted, and cut short when it is absurdly long."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def devinfo_file_name(resource: str, device_id: str) -> str:
    """Device-info file name: ``intel.com-sriov_net_A-0000:03:02.1-device.json``."""
    return f"{resource.replace('/', '-')}-{device_id.replace('/', '-')}-device.json"


def cdi_kind(pool: PoolConfig) -> str:
    """``<prefix>/net-pci``, or ``<prefix>/net-sf`` for auxiliary devices (upstream's classes)."""
    return f"{pool.resource_prefix}/{'net-sf' if pool.is_aux else 'net-pci'}"


def cdi_annotation_key(pool: PoolConfig) -> str:
    return f"cdi.k8s.io/{pool.resource_prefix}_{pool.resource_name}"


def info_entry(device: PoolDevice, ctx: DriverContext) -> dict[str, Any]:
    """The device's value in the ``_INFO`` JSON, complete from the first call."""
    entry: dict[str, Any] = {"generic": {"deviceID": device.id}}
    for family in families_for(device):
        entry.update(family.info(device, ctx))
    if device.extra:
        entry["extra"] = dict(device.extra)
    return entry


def devinfo_document(device: PoolDevice, ctx: DriverContext) -> dict[str, Any]:
    """The NPWG device-info 1.1.0 document of one device: ``pci`` unless a family gives another
    type (``vdpa``); empty when the device gets no file. ``additionalInfo`` is added as a
    top-level ``extra`` object (not in the spec; readers ignore what they do not know)."""
    fams = families_for(device)
    doc: dict[str, Any] | None = None
    for family in fams:
        other = family.devinfo_document(device, ctx)
        if other is not None:
            doc = dict(other)
            break
    if doc is None:
        pci: dict[str, str] = {"pci-address": device.id}
        if device.function.pf_address:
            pci["pf-pci-address"] = device.function.pf_address
        for family in fams:
            pci.update(family.devinfo(device, ctx))
        doc = {"type": "pci", "version": NPWG_VERSION, "pci": pci}
    if doc and device.extra:
        doc["extra"] = dict(device.extra)
    return doc


def prepare(pool: PoolConfig, device: PoolDevice, ctx: DriverContext) -> Prepared:
    fams = families_for(device)
    specs: list[Spec] = []
    for family in fams:
        specs.extend(family.specs(device, ctx))
    info = info_entry(device, ctx)
    doc = devinfo_document(device, ctx)
    body = json.dumps(doc, separators=(",", ":")).encode() if doc else None
    return Prepared(
        id=device.id,
        families=tuple(f.name for f in fams),
        specs=tuple(specs),
        spec_messages=tuple(
            api_pb2.DeviceSpec(
                container_path=s.container_path, host_path=s.host_path, permissions=s.permissions
            )
            for s in specs
        ),
        info_fragment=json.dumps(device.id) + ":" + json.dumps(info, separators=(",", ":")),
        info=info,
        devinfo_name=devinfo_file_name(pool.resource, device.id),
        devinfo_body=body,
        cdi_name=f"{cdi_kind(pool)}={device.id}",
    )


class AllocationTable:
    """The pool's precomputed answers, keyed by device id."""

    def __init__(
        self,
        pool: PoolConfig,
        devices: Iterable[PoolDevice],
        ctx: DriverContext,
        use_cdi: bool = False,
    ) -> None:
        self.pool = pool
        self.use_cdi = use_cdi
        self.env = env_name(pool.resource)
        self.env_info = self.env + "_INFO"
        self.annotation_key = cdi_annotation_key(pool)
        self.prepared: dict[str, Prepared] = {d.id: prepare(pool, d, ctx) for d in devices}

    def validate(self, ids: Sequence[str]) -> list[Prepared]:
        """The prepared entries of one container request, or AllocationError; no side effects.

        Health is not checked: the kubelet picks healthy devices, and one that turned Unhealthy
        since is still allocated (the servicer warns and counts it), as the original plugin does.
        """
        if not ids:
            raise AllocationError("INVALID_ARGUMENT", "container request names no device")
        if len(ids) > len(self.prepared):
            raise AllocationError(
                "INVALID_ARGUMENT",
                f"request for {len(ids)} devices, pool {self.pool.resource} has "
                f"{len(self.prepared)}",
            )
        out: list[Prepared] = []
        seen: set[str] = set()
        for device_id in ids:
            entry = self.prepared.get(device_id)
            if entry is None:
                raise AllocationError(
                    "INVALID_ARGUMENT",
                    f"unknown device {show_id(device_id)} for {self.pool.resource}",
                )
            if device_id in seen:
                raise AllocationError(
                    "INVALID_ARGUMENT", f"device {show_id(device_id)} requested twice"
                )
            seen.add(device_id)
            out.append(entry)
        return out

    def response(self, entries: Sequence[Prepared]) -> api_pb2.ContainerAllocateResponse:
        """Joins the prepared pieces of validated entries (request order kept)."""
        envs = {
            self.env: ",".join(e.id for e in entries),
            self.env_info: "{" + ",".join(e.info_fragment for e in entries) + "}",
        }
        if self.use_cdi:
            names = [e.cdi_name for e in entries]
            return api_pb2.ContainerAllocateResponse(
                envs=envs,
                annotations={self.annotation_key: ",".join(names)},
                cdi_devices=[api_pb2.CDIDevice(name=n) for n in names],
            )
        if len(entries) == 1:
            specs: Sequence[api_pb2.DeviceSpec] = entries[0].spec_messages
        else:
            seen: set[str] = set()
            unique: list[api_pb2.DeviceSpec] = []
            for entry in entries:
                for spec, msg in zip(entry.specs, entry.spec_messages, strict=True):
                    if spec.host_path not in seen:
                        seen.add(spec.host_path)
                        unique.append(msg)
            specs = unique
        return api_pb2.ContainerAllocateResponse(envs=envs, devices=specs)
