"""``tuple[X, ...]`` fields of bus messages (``sriovdp.shared.messages``): they travel as msgpack
arrays and are checked item by item as strictly as scalar fields."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from sriovdp.shared.messages import MessageError, PoolStats, decode, encode

STATS = PoolStats(
    "intel-com_a", "intel.com/a", 10, ("ok", "failed_precondition"), (3, 1), 3, (0.001, 0.01),
    (2, 1, 1), 0.5, 1, 1, 2,
)  # fmt: skip


def _frames(body: dict[str, Any]) -> tuple[bytes, bytes]:
    env = {"v": 1, "kind": "pool.stats", "src": "t", "seq": 1, "ts": 1.0, "body": body}
    return b"pool.intel-com_a.stats", msgpack.packb(env, use_bin_type=True)


def _body(**change: Any) -> dict[str, Any]:
    return {**{f.name: getattr(STATS, f.name) for f in dataclasses.fields(STATS)}, **change}


def test_arrays_come_back_as_tuples() -> None:
    message = decode(*encode(STATS, "t", 1)).message
    assert message == STATS
    assert isinstance(message, PoolStats)
    assert isinstance(message.allocate_calls, tuple)


def test_a_float_array_takes_ints() -> None:
    message = decode(*_frames(_body(latency_bounds=[1, 2.5]))).message
    assert isinstance(message, PoolStats)
    assert message.latency_bounds == (1, 2.5)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("allocate_calls", 3, "field 'allocate_calls' is int, expected list"),
        ("allocate_calls", "abc", "field 'allocate_calls' is str, expected list"),
        ("allocate_calls", {"a": 1}, "field 'allocate_calls' is dict, expected list"),
        ("allocate_calls", [1, "2"], r"field 'allocate_calls\[\]' is str, expected int"),
        ("allocate_calls", [1, True], r"field 'allocate_calls\[\]' is bool, expected int"),
        ("allocate_calls", [[1]], r"field 'allocate_calls\[\]' is list, expected int"),
        ("allocate_outcomes", [b"ok"], r"field 'allocate_outcomes\[\]' is bytes, expected str"),
        ("latency_bounds", [None], r"field 'latency_bounds\[\]' is NoneType, expected float"),
    ],
)
def test_a_mistyped_item_is_refused(field: str, value: object, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        decode(*_frames(_body(**{field: value})))
