"""JSON log lines (every process): ``pid`` is the logging process's own, always."""

from __future__ import annotations

import json
import logging
import os

import pytest

from sriovdp.shared.backoff import Backoff
from sriovdp.shared.logs import JsonFormatter
from sriovdp.supervisor.child import Child, ChildSpec, change_state
from sriovdp.supervisor.states import ChildState


def _line(record: logging.LogRecord) -> dict[str, object]:
    data: dict[str, object] = json.loads(JsonFormatter("supervisor").format(record))
    return data


def test_an_extra_pid_never_replaces_the_own_pid() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__["pid"] = 4242
    record.__dict__["child"] = "pool-a"
    line = _line(record)
    assert line["pid"] == os.getpid()
    assert line["child"] == "pool-a"
    assert line["proc"] == "supervisor"


def test_a_state_change_names_the_child_pid_in_its_own_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    child = Child(ChildSpec("pool-a", "plugin", ("plugin",)), Backoff())
    child.pid = 4242
    with caplog.at_level(logging.INFO, logger="sriovdp.supervisor.child"):
        change_state(child, ChildState.STARTING, "spawned", 1.0, lambda _m: None)
    (record,) = caplog.records
    line = _line(record)
    assert line["pid"] == os.getpid()
    assert line["child_pid"] == 4242
    assert line["to"] == "STARTING"
