"""sriovdp.workers.plugin.checkpoint: the kubelet's checkpoint in both DeviceIDs shapes, as the
kubelet stand-in writes it, every refusal with file, field and value, and fuzzing (a garbage
checkpoint gives a CheckpointError, never anything else)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sriovdp.simnode.kubelet import KubeletStandIn, PodDevices
from sriovdp.workers.plugin.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    HeldDevices,
    held_devices,
    read_held,
)

A = "intel.com/sriov_net_A"
B = "intel.com/sriov_net_B"

#: as a kubelet since 1.20 writes it (DeviceIDs by NUMA node, AllocResp base64)
CURRENT = {
    "Data": {
        "PodDeviceEntries": [
            {
                "PodUID": "5e1f0b6c-0d4c-4a57-9d5b-3f0c3c8e8a11",
                "ContainerName": "app",
                "ResourceName": A,
                "DeviceIDs": {"0": ["0000:03:02.1"], "-1": ["0000:03:04.3"]},
                "AllocResp": "CjMKIVBDSURFVklDRQ==",
            },
            {
                "PodUID": "77aa",
                "ContainerName": "side",
                "ResourceName": B,
                "DeviceIDs": {"1": ["0000:81:00.2"]},
                "AllocResp": "",
            },
        ],
        "RegisteredDevices": {A: ["0000:03:02.1", "0000:03:04.3", "0000:03:04.4"]},
    },
    "Checksum": 3164426163,
}
#: as kubelets before 1.20 wrote it (DeviceIDs a list)
OLD = {
    "Data": {
        "PodDeviceEntries": [
            {
                "PodUID": "1",
                "ContainerName": "c",
                "ResourceName": A,
                "DeviceIDs": ["0000:03:02.1"],
                "AllocResp": "",
            }
        ],
        "RegisteredDevices": None,
    },
    "Checksum": 1,
}


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_both_device_id_shapes(tmp_path: Path) -> None:
    held = read_held(write(tmp_path / CHECKPOINT_NAME, CURRENT))
    assert held == {A: {"0000:03:02.1", "0000:03:04.3"}, B: {"0000:81:00.2"}}
    assert read_held(write(tmp_path / "old", OLD)) == {A: {"0000:03:02.1"}}


def test_empty_checkpoint_of_a_kubelet_with_no_pods() -> None:
    # Go writes a nil slice as null; BootID appears in recent kubelets; unknown keys are ignored
    doc = {
        "Data": {"PodDeviceEntries": None, "RegisteredDevices": {}},
        "Checksum": 0,
        "BootID": "x",
    }
    assert held_devices(doc) == {}
    entry = {"ResourceName": A, "DeviceIDs": None, "Future": 1}
    assert held_devices({"Data": {"PodDeviceEntries": [entry]}}) == {A: set()}


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_what_the_kubelet_stand_in_writes_reads_back(tmp_path: Path, fmt: str) -> None:
    kubelet = KubeletStandIn(tmp_path, start=False, checkpoint_format=fmt)
    kubelet.pods = [
        PodDevices("p1", "c0", A, ("0000:03:02.1", "0000:03:02.2"), (0, -1), b"\x01"),
        PodDevices("p2", "c0", B, ("0000:81:00.2",), (1,), b""),
    ]
    kubelet.write_checkpoint()
    doc = json.loads(kubelet.checkpoint.read_text())
    ids = doc["Data"]["PodDeviceEntries"][0]["DeviceIDs"]
    assert ids == (["0000:03:02.1", "0000:03:02.2"] if fmt == "v1" else
                   {"0": ["0000:03:02.1"], "-1": ["0000:03:02.2"]})  # fmt: skip
    assert read_held(kubelet.checkpoint) == {
        A: {"0000:03:02.1", "0000:03:02.2"},
        B: {"0000:81:00.2"},
    }
    kubelet.delete_pod("p1")
    assert read_held(kubelet.checkpoint) == {B: {"0000:81:00.2"}}
    kubelet.delete_pod("p2")
    assert json.loads(kubelet.checkpoint.read_text())["Data"]["PodDeviceEntries"] is None
    assert read_held(kubelet.checkpoint) == {}
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp file left


BAD: list[tuple[Any, str]] = [
    ("", "not JSON"),
    ("{", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    ([], "top level: [] is not an object"),
    ({}, "Data: null is not an object"),
    ({"Data": []}, "Data: [] is not an object"),
    ({"Data": {}}, "Data.PodDeviceEntries: missing"),
    ({"Data": {"PodDeviceEntries": {}}}, "Data.PodDeviceEntries: {} is not a list"),
    ({"Data": {"PodDeviceEntries": [1]}}, "Data.PodDeviceEntries[0]: 1 is not an object"),
    (
        {"Data": {"PodDeviceEntries": [{"ResourceName": 5, "DeviceIDs": []}]}},
        "Data.PodDeviceEntries[0].ResourceName: 5 is not a string",
    ),
    (
        {"Data": {"PodDeviceEntries": [{"ResourceName": A}]}},
        "Data.PodDeviceEntries[0].DeviceIDs: missing",
    ),
    (
        {"Data": {"PodDeviceEntries": [{"ResourceName": A, "DeviceIDs": "0000:03:02.1"}]}},
        "Data.PodDeviceEntries[0].DeviceIDs: '0000:03:02.1' is neither a list nor a map",
    ),
    (
        {"Data": {"PodDeviceEntries": [{"ResourceName": A, "DeviceIDs": {"x": []}}]}},
        "Data.PodDeviceEntries[0].DeviceIDs: NUMA node 'x' is not a number",
    ),
    (
        {"Data": {"PodDeviceEntries": [{"ResourceName": A, "DeviceIDs": {"0": "a"}}]}},
        "Data.PodDeviceEntries[0].DeviceIDs.0: 'a' is not a list of device ids",
    ),
    (
        {"Data": {"PodDeviceEntries": [{"ResourceName": A, "DeviceIDs": {"0": ["a", 7]}}]}},
        "Data.PodDeviceEntries[0].DeviceIDs.0[1]: 7 is not a device id",
    ),
]


@pytest.mark.parametrize(("doc", "reason"), BAD)
def test_garbage_is_refused_with_file_field_and_value(
    tmp_path: Path, doc: Any, reason: str
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        write(path, doc)
    with pytest.raises(CheckpointError) as err:
        read_held(path)
    assert str(err.value).startswith(f"{path}: ") and reason in str(err.value)
    assert len(str(err.value)) < 300


def test_missing_unreadable_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        read_held(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_held(tmp_path)  # a directory where the file should be


def test_held_devices_warns_once_per_problem_and_rereads_only_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    held = HeldDevices(tmp_path, A)
    caplog.set_level(logging.WARNING)
    assert held.refresh() == (None, True)
    assert held.refresh() == (None, True)  # still missing: read again, not logged again
    assert len(caplog.records) == 1 and "missing" in caplog.records[0].getMessage()
    write(tmp_path / CHECKPOINT_NAME, CURRENT)
    assert held.refresh() == ({"0000:03:02.1", "0000:03:04.3"}, True)
    assert held.refresh() == ({"0000:03:02.1", "0000:03:04.3"}, False)  # same file: not re-read
    write(tmp_path / CHECKPOINT_NAME, "garbage that is longer")
    assert held.refresh() == (None, True)
    assert held.refresh(force=True) == (None, True)
    assert len(caplog.records) == 2 and "not JSON" in caplog.records[1].getMessage()


# -- fuzzing: read_held gives a mapping of sets of strings or raises CheckpointError ----------

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _check(path: Path) -> None:
    try:
        held = read_held(path)
    except CheckpointError as exc:
        assert str(exc).startswith(str(path)) and len(str(exc)) < 400
        return
    assert all(
        isinstance(r, str) and all(isinstance(i, str) for i in ids) for r, ids in held.items()
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(_json)
def test_fuzz_any_json(tmp_path: Path, doc: Any) -> None:
    _check(write(tmp_path / CHECKPOINT_NAME, doc))


def _entry() -> Any:
    ids = st.lists(st.text(max_size=12) | st.integers(), max_size=3)
    shapes = (
        ids
        | st.dictionaries(st.sampled_from(["0", "1", "-1", "x"]), ids | _scalars, max_size=2)
        | _scalars
    )
    return st.fixed_dictionaries(
        {"ResourceName": st.sampled_from([A, B, 3]), "DeviceIDs": shapes},
        optional={"PodUID": st.text(max_size=4), "AllocResp": _scalars},
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(_entry(), max_size=4), st.sampled_from([None, {}, [], 1]))
def test_fuzz_near_misses(tmp_path: Path, entries: list[Any], registered: Any) -> None:
    doc = {"Data": {"PodDeviceEntries": entries, "RegisteredDevices": registered}, "Checksum": 1}
    _check(write(tmp_path / CHECKPOINT_NAME, doc))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_fuzz_bytes(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(raw)
    _check(path)
