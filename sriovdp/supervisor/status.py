"""Status rows and their rendering: table for people, JSON for machines (supervisor and CLI).

The supervisor builds a :class:`SupervisorStatus` from its own table (never by asking a worker) and
sends :meth:`SupervisorStatus.to_dict` over the control socket; the CLI rebuilds it with
:meth:`SupervisorStatus.from_dict` and prints :func:`render_table` or the JSON.

JSON shape of ``sriov-supervisor status --json`` (version 1; times in seconds, absent values null)::

    {
      "version": 1,
      "supervisor": {
        "pid": 4242, "uptime": 12.5, "generation": 1, "config_file": "/etc/pcidp/config.json",
        "spawn_mode": "zygote", "zygote": {"pid": 4244 | null, "starts": 1},
        "last_reload_error": null | ["message", ...],
        "bus": {"forwarded": 120, "dropped": 0}, "control": {"requests": 3, "dropped": 0},
        "metrics": {"address": "0.0.0.0:9830", "listening": true, "bound": "0.0.0.0:9830",
                    "error": ""}   (empty with --no-metrics)
      },
      "children": [
        {"name": "intel-com_sriov_net_A", "role": "plugin", "pool": "intel.com/sriov_net_A",
         "state": "RUNNING", "pid": 4250, "uptime": 12.1, "restarts": 0, "last_exit": null,
         "registered": true, "devices_healthy": 8, "devices_total": 8,
         "last_event": "READY", "heartbeat_age": 3.2},
        ...
      ]
    }

``pool`` is null for the health monitor and the kubelet watcher, and so are ``registered`` and
the device counts of a pool whose worker has not published a summary yet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sriovdp.shared import exitcodes

STATUS_VERSION = 1


@dataclass(frozen=True, slots=True)
class ChildRow:
    name: str
    role: str
    pool: str | None
    state: str
    pid: int | None
    uptime: float | None
    restarts: int
    last_exit: str | None
    registered: bool | None
    devices_healthy: int | None
    devices_total: int | None
    last_event: str
    #: seconds since the child's last heartbeat (since READY before the first); None: no process.
    #: Past the heartbeat timeout (45 s) the supervisor restarts it: a high value is a hung loop
    heartbeat_age: float | None = None


@dataclass(frozen=True, slots=True)
class SupervisorStatus:
    pid: int
    uptime: float
    generation: int
    config_file: str
    spawn_mode: str
    last_reload_error: tuple[str, ...] | None
    children: tuple[ChildRow, ...]
    bus: dict[str, int] = dataclasses.field(default_factory=dict)
    control: dict[str, int] = dataclasses.field(default_factory=dict)
    #: spawn mode zygote: its pid while one runs (a new one starts at the next spawn), and starts
    zygote: dict[str, int | None] = dataclasses.field(default_factory=dict)
    #: the metrics child's HTTP endpoint: address, listening, bound, error ({} with --no-metrics)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def all_running(self) -> bool:
        return all(row.state == "RUNNING" for row in self.children)

    def exit_code(self) -> int:
        """0 when every child is RUNNING, else 3 (supervisorctl's LSB convention)."""
        return exitcodes.OK if self.all_running else exitcodes.NOT_RUNNING

    def not_ready(self) -> list[str]:
        """Why the node is not ready to take pods ([] when it is): every pool RUNNING and
        registered with the kubelet, every other child RUNNING, the last reload not refused."""
        reasons = []
        if self.last_reload_error:
            reasons.append("the last reload was refused (invalid config)")
        for row in self.children:
            if row.state != "RUNNING":
                reasons.append(f"{row.name} is {row.state}")
            elif row.pool is not None and not row.registered:
                reasons.append(f"{row.pool} is not registered with the kubelet")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        head = {
            "pid": self.pid,
            "uptime": round(self.uptime, 3),
            "generation": self.generation,
            "config_file": self.config_file,
            "spawn_mode": self.spawn_mode,
            "last_reload_error": list(self.last_reload_error)
            if self.last_reload_error is not None
            else None,
            "bus": dict(self.bus),
            "control": dict(self.control),
            "zygote": dict(self.zygote),
            "metrics": dict(self.metrics),
        }
        rows = [dataclasses.asdict(row) for row in self.children]
        for row in rows:
            for key in ("uptime", "heartbeat_age"):
                if row[key] is not None:
                    row[key] = round(row[key], 3)
        return {"version": STATUS_VERSION, "supervisor": head, "children": rows}

    @classmethod
    def from_dict(cls, data: Any) -> SupervisorStatus:
        """Rebuilds a status from :meth:`to_dict`'s shape; ValueError if it is not that."""
        try:
            if data["version"] != STATUS_VERSION:
                raise ValueError(f"status version {data['version']!r} not understood")
            head = data["supervisor"]
            names = [f.name for f in dataclasses.fields(ChildRow)]
            children = tuple(
                ChildRow(**{n: row[n] for n in names if n in row}) for row in data["children"]
            )
            err = head["last_reload_error"]
            return cls(
                pid=head["pid"],
                uptime=head["uptime"],
                generation=head["generation"],
                config_file=head["config_file"],
                spawn_mode=head["spawn_mode"],
                last_reload_error=tuple(err) if err is not None else None,
                children=children,
                bus=dict(head.get("bus", {})),
                control=dict(head.get("control", {})),
                zygote=dict(head.get("zygote", {})),
                metrics=dict(head.get("metrics", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed status: {exc!r}") from exc


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _devices(row: ChildRow) -> str:
    if row.devices_total is None:
        return "-"
    return f"{row.devices_healthy}/{row.devices_total}"


def _registered(row: ChildRow) -> str:
    if row.registered is None:
        return "-"
    return "yes" if row.registered else "no"


def render_table(status: SupervisorStatus) -> str:
    """The human view: a header line, then one aligned row per child."""
    mode = f"spawn mode {status.spawn_mode}"
    if status.zygote:
        zygote = status.zygote
        mode += f" (zygote pid {zygote.get('pid') or '-'}, started {zygote.get('starts')}x)"
    lines = [
        f"supervisor pid {status.pid}, up {format_duration(status.uptime)}, "
        f"config generation {status.generation} ({status.config_file}), {mode}"
    ]
    metrics = status.metrics
    if metrics and metrics.get("listening"):
        lines.append(f"metrics on http://{metrics.get('bound')}/metrics")
    elif metrics:
        lines.append(
            f"metrics NOT served on {metrics.get('address')}: {metrics.get('error') or '?'}"
        )
    if status.last_reload_error:
        lines.append("last reload FAILED, still running the previous config:")
        lines.extend(f"  {msg}" for msg in status.last_reload_error)
    header: tuple[str, ...] = ("NAME", "ROLE", "POOL", "STATE", "PID", "UPTIME", "RESTARTS")
    header += ("LAST EXIT", "HEARTBEAT", "REGISTERED", "DEVICES", "LAST EVENT")
    rows: list[tuple[str, ...]] = [header]
    for r in status.children:
        rows.append(
            (
                r.name,
                r.role,
                r.pool or "-",
                r.state,
                str(r.pid) if r.pid else "-",
                format_duration(r.uptime),
                str(r.restarts),
                r.last_exit or "-",
                format_duration(r.heartbeat_age) + (" ago" if r.heartbeat_age is not None else ""),
                _registered(r),
                _devices(r),
                r.last_event or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
