"""sriovdp.proto: generated code is fresh and the descriptor matches the published v1beta1 API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sriovdp.proto import generate

PROTO_DIR = Path(generate.__file__).resolve().parent

#: message -> {field: (number, cardinality, type name)} as in k8s.io/kubelet deviceplugin/v1beta1
PUBLISHED: dict[str, dict[str, tuple[int, str, str]]] = {
    "DevicePluginOptions": {
        "pre_start_required": (1, "optional", "bool"),
        "get_preferred_allocation_available": (2, "optional", "bool"),
    },
    "RegisterRequest": {
        "version": (1, "optional", "string"),
        "endpoint": (2, "optional", "string"),
        "resource_name": (3, "optional", "string"),
        "options": (4, "optional", "DevicePluginOptions"),
    },
    "Empty": {},
    "ListAndWatchResponse": {"devices": (1, "repeated", "Device")},
    "TopologyInfo": {"nodes": (1, "repeated", "NUMANode")},
    "NUMANode": {"ID": (1, "optional", "int64")},
    "Device": {
        "ID": (1, "optional", "string"),
        "health": (2, "optional", "string"),
        "topology": (3, "optional", "TopologyInfo"),
    },
    "PreStartContainerRequest": {"devices_ids": (1, "repeated", "string")},
    "PreStartContainerResponse": {},
    "PreferredAllocationRequest": {
        "container_requests": (1, "repeated", "ContainerPreferredAllocationRequest")
    },
    "ContainerPreferredAllocationRequest": {
        "available_deviceIDs": (1, "repeated", "string"),
        "must_include_deviceIDs": (2, "repeated", "string"),
        "allocation_size": (3, "optional", "int32"),
    },
    "PreferredAllocationResponse": {
        "container_responses": (1, "repeated", "ContainerPreferredAllocationResponse")
    },
    "ContainerPreferredAllocationResponse": {"deviceIDs": (1, "repeated", "string")},
    "AllocateRequest": {"container_requests": (1, "repeated", "ContainerAllocateRequest")},
    "ContainerAllocateRequest": {"devices_ids": (1, "repeated", "string")},
    "AllocateResponse": {"container_responses": (1, "repeated", "ContainerAllocateResponse")},
    "ContainerAllocateResponse": {
        "envs": (1, "repeated", "EnvsEntry"),
        "mounts": (2, "repeated", "Mount"),
        "devices": (3, "repeated", "DeviceSpec"),
        "annotations": (4, "repeated", "AnnotationsEntry"),
        "cdi_devices": (5, "repeated", "CDIDevice"),
    },
    "CDIDevice": {"name": (1, "optional", "string")},
    "Mount": {
        "container_path": (1, "optional", "string"),
        "host_path": (2, "optional", "string"),
        "read_only": (3, "optional", "bool"),
    },
    "DeviceSpec": {
        "container_path": (1, "optional", "string"),
        "host_path": (2, "optional", "string"),
        "permissions": (3, "optional", "string"),
    },
}

SERVICES = {
    "Registration": {"Register": ("RegisterRequest", "Empty", False)},
    "DevicePlugin": {
        "GetDevicePluginOptions": ("Empty", "DevicePluginOptions", False),
        "ListAndWatch": ("Empty", "ListAndWatchResponse", True),
        "GetPreferredAllocation": (
            "PreferredAllocationRequest",
            "PreferredAllocationResponse",
            False,
        ),
        "Allocate": ("AllocateRequest", "AllocateResponse", False),
        "PreStartContainer": ("PreStartContainerRequest", "PreStartContainerResponse", False),
    },
}


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, "-m", "sriovdp.proto.generate", str(tmp_path)],
        check=True,
        cwd=PROTO_DIR.parents[1],
    )
    for name in generate.GENERATED:
        fresh = (tmp_path / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} is stale: run `make proto`"


def _field_type(field: object) -> str:
    from google.protobuf.descriptor import FieldDescriptor

    assert isinstance(field, FieldDescriptor)
    if field.message_type is not None:
        return str(field.message_type.name)
    names = {
        FieldDescriptor.TYPE_BOOL: "bool",
        FieldDescriptor.TYPE_STRING: "string",
        FieldDescriptor.TYPE_INT64: "int64",
        FieldDescriptor.TYPE_INT32: "int32",
    }
    return names[field.type]


def test_descriptor_matches_the_published_api() -> None:

    from sriovdp.proto import api_pb2

    desc = api_pb2.DESCRIPTOR
    assert desc.package == "v1beta1"
    assert set(desc.message_types_by_name) == set(PUBLISHED)
    for message, fields in PUBLISHED.items():
        got = {
            f.name: (
                f.number,
                "repeated" if f.is_repeated else "optional",
                _field_type(f),
            )
            for f in desc.message_types_by_name[message].fields
        }
        assert got == fields, message
    for entry in ("EnvsEntry", "AnnotationsEntry"):
        map_entry = desc.message_types_by_name["ContainerAllocateResponse"].nested_types_by_name[
            entry
        ]
        assert map_entry.GetOptions().map_entry
    assert set(desc.services_by_name) == set(SERVICES)
    for service, methods in SERVICES.items():
        sd = desc.services_by_name[service]
        assert sd.full_name == f"v1beta1.{service}"
        got_methods = {
            m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in sd.methods
        }
        assert got_methods == methods
        assert not any(m.client_streaming for m in sd.methods)
