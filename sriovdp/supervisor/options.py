"""Click options shared by the CLI commands (CLI process; no grpc, no pyroute2).

Every option can also come from the environment as ``SRIOV_DP_<OPTION>`` (upper case, ``-`` to
``_``), which is how the DaemonSet sets them. Tests compare deployments/ against these names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from sriovdp.shared import model
from sriovdp.supervisor.runopts import DEFAULT_SPAWN_MODE, SPAWN_MODES, Timeouts
from sriovdp.workers.metrics.address import DEFAULT_METRICS_ADDRESS, split_address

F = TypeVar("F", bound=Callable[..., Any])


def envvar(option: str) -> str:
    """``--config-file`` -> ``SRIOV_DP_CONFIG_FILE``.

    A boolean flag pair (``--use-cdi/--no-use-cdi`` -> ``SRIOV_DP_USE_CDI``) takes its name from
    its first half.
    """
    return "SRIOV_DP_" + option.split("/", maxsplit=1)[0].lstrip("-").upper().replace("-", "_")


def _opt(name: str, **kwargs: Any) -> Callable[[F], F]:
    kwargs.setdefault("show_default", True)
    kwargs.setdefault("show_envvar", True)
    return click.option(name, envvar=envvar(name), **kwargs)


config_file = _opt(
    "--config-file",
    type=click.Path(dir_okay=False),
    default=model.DEFAULT_CONFIG_FILE,
    help="JSON resource pool config.",
)
resource_prefix = _opt(
    "--resource-prefix",
    default=model.DEFAULT_RESOURCE_PREFIX,
    help="Resource name prefix for pools that set no resourcePrefix.",
)
#: the roots the node is read from must exist: a wrong mount or a typo would otherwise look
#: like a node without devices (click exits 2 naming the option and the path)
sysfs_root = _opt(
    "--sysfs-root",
    type=click.Path(file_okay=False, exists=True),
    default=model.DEFAULT_SYSFS_ROOT,
    help="Where sysfs is mounted (a fake tree in tests and the demo).",
)
plugin_dir = _opt(
    "--plugin-dir",
    type=click.Path(file_okay=False),
    default=model.DEFAULT_PLUGIN_DIR,
    help="Kubelet device-plugin directory (kubelet.sock and our sockets).",
)
run_dir = _opt(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=model.DEFAULT_RUN_DIR,
    help="Private directory (0700) for the bus and control sockets and the lock.",
)
devinfo_dir = _opt(
    "--devinfo-dir",
    type=click.Path(file_okay=False),
    default=model.DEFAULT_DEVINFO_DIR,
    help="Where NPWG device-info files are written at Allocate.",
)
cdi_dir = _opt(
    "--cdi-dir",
    type=click.Path(file_okay=False),
    default=model.DEFAULT_CDI_DIR,
    help="Where CDI spec files are written when --use-cdi is on.",
)
use_cdi = _opt(
    "--use-cdi/--no-use-cdi",
    default=False,
    help="Answer Allocate with CDI device names instead of device specs.",
)
log_level = _opt(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    help="Log level of every process.",
)
log_format = _opt(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="Log line format of every process.",
)
proc_root = _opt(
    "--proc-root",
    type=click.Path(file_okay=False, exists=True),
    default="/proc",
    help="Where procfs is mounted (the default route is read from <proc-root>/net/route).",
)
dev_root = _opt(
    "--dev-root",
    type=click.Path(file_okay=False, exists=True),
    default=model.DEFAULT_DEV_ROOT,
    help="Root under which the host's device nodes are looked up (<dev-root>/dev/vhost-net, "
    "...): needVhostNet gets the nodes that exist there, and every node a pool names but the "
    "host lacks is reported. The DaemonSet mounts the host's /dev read-only at /host/dev and "
    "sets /host.",
)

# --- run's own options ------------------------------------------------------------------------

_timeouts = Timeouts()


def _address(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        split_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


spawn_mode = _opt(
    "--spawn-mode",
    type=click.Choice(SPAWN_MODES),
    default=DEFAULT_SPAWN_MODE,
    help="zygote: fork workers from a preloaded spawner (less memory); exec: a fresh "
    "interpreter per worker.",
)
heartbeat_timeout = _opt(
    "--heartbeat-timeout",
    type=click.FloatRange(min=0.1),
    default=_timeouts.heartbeat,
    help="Seconds a RUNNING child may stay silent before it is restarted (a hung main loop); "
    "children beat every third of it.",
)
start_timeout = _opt(
    "--start-timeout",
    type=click.FloatRange(min=0.1),
    default=_timeouts.start,
    help="Seconds a starting child has to say READY before it is restarted.",
)
stop_grace = _opt(
    "--stop-grace",
    type=click.FloatRange(min=0.0),
    default=_timeouts.stop_grace,
    help="Seconds between SIGTERM and SIGKILL when stopping a child.",
)
metrics_address = _opt(
    "--metrics-address",
    default=DEFAULT_METRICS_ADDRESS,
    callback=_address,
    help="HOST:PORT ([v6]:PORT for IPv6) where the metrics child serves /metrics (Prometheus), "
    "/healthz and /readyz over HTTP. Every address of the node by default: a hostNetwork pod's "
    "HTTP probes and Prometheus scrapes reach it on the node's IP. Port 0: any free port (status "
    "shows which).",
)
metrics = _opt(
    "--metrics/--no-metrics",
    default=True,
    help="Start the metrics child (--no-metrics: no HTTP endpoint at all).",
)
watch_config = _opt(
    "--watch-config/--no-watch-config",
    default=True,
    help="Apply a changed config file as `reload` does, half a second after it settles (a "
    "ConfigMap update's symlink swap included); an invalid file is refused and changes nothing.",
)
