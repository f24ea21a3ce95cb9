"""Status rows: the documented JSON shape, its round trip, exit codes and the table."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sriovdp.supervisor.status import ChildRow, SupervisorStatus, format_duration, render_table


def row(
    name: str, state: str = "RUNNING", pool: str | None = "x.io/a", registered: bool | None = None
) -> ChildRow:
    if registered is None and pool:
        registered = True
    total = 8 if pool else None
    return ChildRow(name, "plugin" if pool else name, pool, state, 42, 61.5, 2, "signal SIGKILL",
                    registered, 7 if pool else None, total, "READY")  # fmt: skip


def status(*rows: ChildRow, error: tuple[str, ...] | None = None) -> SupervisorStatus:
    return SupervisorStatus(1, 3700.0, 3, "/etc/c.json", "zygote", error, rows, {"dropped": 0})


def test_json_shape_is_the_documented_one() -> None:
    data = json.loads(json.dumps(status(row("a"), row("health-monitor", pool=None)).to_dict()))
    assert set(data) == {"version", "supervisor", "children"}
    assert data["version"] == 1
    assert set(data["supervisor"]) == {
        "pid", "uptime", "generation", "config_file", "spawn_mode", "last_reload_error", "bus",
        "control", "zygote", "metrics",
    }  # fmt: skip
    assert set(data["children"][0]) == {
        "name", "role", "pool", "state", "pid", "uptime", "restarts", "last_exit", "registered",
        "devices_healthy", "devices_total", "last_event", "heartbeat_age",
    }  # fmt: skip
    assert data["children"][1]["pool"] is None
    assert SupervisorStatus.from_dict(data) == status(row("a"), row("health-monitor", pool=None))


def test_exit_codes() -> None:
    assert status(row("a"), row("b")).exit_code() == 0
    assert status(row("a"), row("b", "BACKOFF")).exit_code() == 3
    assert status(row("a", "FATAL")).exit_code() == 3


def test_from_dict_refuses_other_shapes() -> None:
    with pytest.raises(ValueError, match="malformed"):
        SupervisorStatus.from_dict({"version": 1})
    with pytest.raises(ValueError, match="version"):
        SupervisorStatus.from_dict({"version": 2, "supervisor": {}, "children": []})


def test_table_has_header_rows_and_reload_error() -> None:
    text = render_table(status(row("a"), row("health-monitor", pool=None), error=("bad: x",)))
    lines = text.splitlines()
    assert "config generation 3" in lines[0]
    assert "last reload FAILED" in lines[1] and lines[2] == "  bad: x"
    assert lines[3].split()[:4] == ["NAME", "ROLE", "POOL", "STATE"]
    assert lines[4].split()[:6] == ["a", "plugin", "x.io/a", "RUNNING", "42", "1m01s"]
    assert "7/8" in lines[4] and "yes" in lines[4]
    assert lines[5].split()[2] == "-"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (5.9, "5s"), (61, "1m01s"), (3700, "1h01m"), (90000, "1d01h")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_not_ready_names_every_reason() -> None:
    assert status(row("a"), row("health-monitor", pool=None)).not_ready() == []
    reasons = status(
        row("a", pool="intel.com/a", registered=False),
        row("b", state="BACKOFF"),
        row("health-monitor", pool=None, state="STARTING"),
        error=("config.json: bad",),
    ).not_ready()
    assert reasons == [
        "the last reload was refused (invalid config)",
        "intel.com/a is not registered with the kubelet",
        "b is BACKOFF",
        "health-monitor is STARTING",
    ]


def test_the_table_shows_the_heartbeat_age() -> None:
    table = render_table(status(dataclasses.replace(row("a"), heartbeat_age=12.5)))
    assert "HEARTBEAT" in table.splitlines()[1]
    assert "12s ago" in table
