"""Bus message decoding stays strict (``sriovdp.shared.messages``): the field table is worked out
once at import, and every kind is still checked field by field."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from sriovdp.shared.messages import (
    KINDS,
    KubeletSocketState,
    LinkState,
    Message,
    MessageError,
    PoolSummary,
    WorkerHeartbeat,
    WorkerReady,
    WorkerStateChanged,
    decode,
    encode,
)

SAMPLES: list[Message] = [
    LinkState("ens1f0", 4, "UP", True, True),
    KubeletSocketState(True, 1234, 2, 5),
    WorkerReady("intel-com_a", 10),
    WorkerHeartbeat("intel-com_a", 10),
    PoolSummary("intel-com_a", "intel.com/a", 10, True, 64, 63, "serving"),
    WorkerStateChanged("intel-com_a", "RUNNING", 10),
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
