"""Bus message decoding stays strict (``sriovdp.shared.messages``): the field table is worked out
once at import, and every kind is still checked field by field."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from sriovdp.shared.messages import (
    KINDS,
    DeviceEvent,
    KubeletCheckpointState,
    KubeletSocketState,
    LinkState,
    Message,
    MessageError,
    MetricsEndpoint,
    PoolStats,
    PoolSummary,
    SupervisorReport,
    WorkerHeartbeat,
    WorkerReady,
    WorkerStateChanged,
    decode,
    encode,
)

SAMPLES: list[Message] = [
    LinkState("ens1f0", 4, "UP", True, True),
    KubeletSocketState(True, 1234, 2, 5),
    KubeletCheckpointState(True, 1234, 1_700_000_000_123_456_789),
    WorkerReady("intel-com_a", 10),
    WorkerHeartbeat("intel-com_a", 10),
    PoolSummary("intel-com_a", "intel.com/a", 10, True, 64, 63, "serving"),
    WorkerStateChanged("intel-com_a", "RUNNING", 10),
    PoolStats("intel-com_a", "intel.com/a", 10, ("ok",), (3,), 3, (0.001,), (2, 1), 0.5, 1, 0, 1),
    SupervisorReport(
        9,
        1.5e9,
        15.0,
        2,
        1,
        1,
        True,
        0,
        ("a", "b"),
        ("plugin", "metrics"),
        ("RUNNING", "EXITED"),
        (0, 2),
        (False, True),
        (0, -9),
    ),
    MetricsEndpoint("metrics", 11, "0.0.0.0:9830", False, "", "address in use"),
    DeviceEvent("pci", "0000:04:00.1", "bind", "vfio-pci"),
]


def _frames(kind: str, body: dict[str, Any], topic: str) -> tuple[bytes, bytes]:
    envelope = {"v": 1, "kind": kind, "src": "t", "seq": 1, "ts": 1.5, "body": body}
    return topic.encode(), msgpack.packb(envelope, use_bin_type=True)


def _body(message: Message) -> dict[str, Any]:
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}


def test_every_kind_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} | {KINDS["kubelet.plugin.deleted"]} == set(KINDS.values())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.KIND)
def test_round_trip(message: Message) -> None:
    env = decode(*encode(message, "src", 7))
    assert env.message == message
    assert (env.kind, env.src, env.seq, env.topic) == (message.KIND, "src", 7, message.topic())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.KIND)
def test_a_missing_field_is_refused(message: Message) -> None:
    body = _body(message)
    dropped = sorted(body)[0]
    del body[dropped]
    with pytest.raises(MessageError, match=f"missing fields \\['{dropped}'\\]"):
        decode(*_frames(message.KIND, body, message.topic()))


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.KIND)
def test_an_extra_field_is_refused(message: Message) -> None:
    body = {**_body(message), "zz": 1}
    with pytest.raises(MessageError, match=r"unexpected fields \['zz'\]"):
        decode(*_frames(message.KIND, body, message.topic()))


def test_a_renamed_field_is_refused_with_both_names() -> None:
    body = {"name": "w", "pdi": 3}
    error = r"missing fields \['pid'\], unexpected fields \['pdi'\]"
    with pytest.raises(MessageError, match=error):
        decode(*_frames("worker.hb", body, "worker.w.hb"))


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("pid", "10", "field 'pid' is str, expected int"),
        ("pid", True, "field 'pid' is bool, expected int"),
        ("pid", 1.0, "field 'pid' is float, expected int"),
        ("name", 5, "field 'name' is int, expected str"),
    ],
)
def test_a_mistyped_field_is_refused(field: str, value: object, error: str) -> None:
    body: dict[str, Any] = {"name": "w", "pid": 3, field: value}
    with pytest.raises(MessageError, match=error):
        decode(*_frames("worker.hb", body, "worker.w.hb"))


def test_a_bool_field_takes_only_bools() -> None:
    body = {**_body(SAMPLES[0]), "carrier": 1}
    with pytest.raises(MessageError, match="field 'carrier' is int, expected bool"):
        decode(*_frames("link.state", body, "link.ens1f0.state"))


def test_a_body_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(MessageError, match="body is list, not a map"):
        decode(*_frames("worker.hb", [1, 2], "worker.w.hb"))  # type: ignore[arg-type]


def test_the_topic_must_match_the_body() -> None:
    with pytest.raises(MessageError, match="does not match"):
        decode(*_frames("worker.hb", {"name": "w", "pid": 3}, "worker.other.hb"))


def _heartbeat_variants() -> list[tuple[bytes, bytes]]:
    """A valid heartbeat and one change of every part of it, valid or not."""
    good: dict[str, Any] = {"v": 1, "kind": "worker.hb", "src": "w", "seq": 9, "ts": 2.5}
    body: dict[str, Any] = {"name": "pool-a", "pid": 42}
    topic = b"worker.pool-a.hb"

    def frames(env: Any, t: bytes = topic) -> tuple[bytes, bytes]:
        return t, msgpack.packb(env, use_bin_type=True)

    out = [frames({**good, "body": body}), frames({**good, "body": body, "extra": 1})]
    for key in ("v", "kind", "src", "seq", "ts", "body"):
        out.append(frames({k: v for k, v in {**good, "body": body}.items() if k != key}))
        for value in (None, True, 1, 1.5, "x", b"x", [1], {"a": 1}):
            out.append(frames({**good, "body": body, key: value}))
    for key in ("name", "pid"):
        out.append(frames({**good, "body": {k: v for k, v in body.items() if k != key}}))
        for value in (None, True, 0, -1, 1.0, "x", "é", b"pool-a", [1]):
            out.append(frames({**good, "body": {**body, key: value}}))
    out.append(frames({**good, "body": {**body, "zz": 1}}))
    out.append(frames({**good, "kind": "worker.ready", "body": body}, b"worker.pool-a.ready"))
    out.append(frames({**good, "kind": "worker.ready", "body": body}))
    for other in (b"worker.pool-b.hb", b"worker.pool-a.hb.", b"x" * 600 + b".hb", b"worker.?.hb"):
        out.append(frames({**good, "body": body}, other))
    long_name = {**body, "name": "n" * 600}
    out.append(frames({**good, "body": long_name}, b"worker." + b"n" * 600 + b".hb"))
    out.append(frames({**good, "body": {**body, "name": "é"}}, "worker.é.hb".encode()))
    out += [(topic, b"\xc1"), (topic, b""), (topic, b"\x00" * 70_000), (topic, b"\x93\x01\x02\x03")]
    return out


def test_every_change_of_a_heartbeat_is_decoded_or_refused_never_a_crash() -> None:
    """The supervisor decodes every bus frame: each variant gives a message or a MessageError."""
    accepted = 0
    for topic, payload in _heartbeat_variants():
        try:
            env = decode(topic, payload)
        except MessageError:
            continue
        assert env.topic == topic.decode()
        assert env.message.topic() == env.topic
        accepted += 1
    assert accepted >= 2  # the valid heartbeat, and a valid READY among the variants
