"""``run``, ``status``, ``reload``, ``restart``, ``demo`` (CLI process; ``run`` then ``exec``s
the supervisor process, ``python -m sriovdp.supervisor``, a fresh interpreter without click).

Module level imports only what parsing ``run`` needs (the control client and its zmq load with the
commands that use them). Nothing here imports grpc or pyroute2 at module level: ``demo`` imports
the kubelet stand-in inside its function, and it runs in the CLI process, never in the supervisor
(a subprocess).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sriovdp.shared import exitcodes, logs
from sriovdp.supervisor import options
from sriovdp.supervisor.runopts import (
    DEFAULT_SPAWN_MODE,
    INFRA_ROLES,
    SPAWN_MODES,
    RunOptions,
    Timeouts,
    checked_config,
    options_to_json,
)
from sriovdp.supervisor.status import SupervisorStatus, render_table

if TYPE_CHECKING:
    from sriovdp.supervisor.client import ControlClient

COMMANDS: list[click.Command] = []


def run_options(  # noqa: PLR0917 (one parameter per option of run)
    config_file: str,
    resource_prefix: str,
    plugin_dir: str,
    sysfs_root: str,
    proc_root: str,
    dev_root: str,
    run_dir: str,
    devinfo_dir: str,
    cdi_dir: str,
    use_cdi: bool,
    log_level: str,
    log_format: str,
    spawn_mode: str,
    heartbeat_timeout: float,
    start_timeout: float,
    stop_grace: float,
    metrics_address: str,
    metrics: bool,
    watch_config: bool,
) -> RunOptions:
    """The :class:`RunOptions` of ``run``'s parsed options (its parameters by name)."""
    return RunOptions(
        config_file=config_file,
        resource_prefix=resource_prefix,
        plugin_dir=plugin_dir,
        sysfs_root=sysfs_root,
        proc_root=proc_root,
        dev_root=dev_root,
        run_dir=run_dir,
        devinfo_dir=devinfo_dir,
        cdi_dir=cdi_dir,
        use_cdi=use_cdi,
        log_level=log_level.lower(),
        log_format=log_format,
        spawn_mode=spawn_mode,
        timeouts=Timeouts(heartbeat=heartbeat_timeout, start=start_timeout, stop_grace=stop_grace),
        infra=tuple(r for r in INFRA_ROLES if metrics or r != "metrics"),
        metrics_address=metrics_address,
        watch_config=watch_config,
    )


@click.command("run")
@options.config_file
@options.resource_prefix
@options.plugin_dir
@options.sysfs_root
@options.proc_root
@options.dev_root
@options.run_dir
@options.devinfo_dir
@options.cdi_dir
@options.use_cdi
@options.log_level
@options.log_format
@options.spawn_mode
@options.heartbeat_timeout
@options.start_timeout
@options.stop_grace
@options.metrics_address
@options.metrics
@options.watch_config
def run_command(**params: Any) -> None:
    """Run the supervisor: one plugin worker per pool, a health monitor, a kubelet watcher
    and a metrics child.

    Exits 2 (with every problem listed) if the config is invalid, before anything starts; 75 if
    another supervisor holds the run dir; 0 after SIGTERM/SIGINT stopped every child.
    """
    opts = run_options(**params)
    if checked_config(opts) is None:
        sys.exit(exitcodes.INVALID_CONFIG)
    # The supervisor runs for the life of the node: it becomes a fresh interpreter (same pid)
    # that never imports click (python -m sriovdp.supervisor): the CLI's imports are not carried
    # for months.
    argv = [sys.executable, "-m", "sriovdp.supervisor", "--options", options_to_json(opts)]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:  # no interpreter to exec: supervise from this one
        from sriovdp.supervisor.main import run

        logs.setup("supervisor", opts.log_level, opts.log_format)
        logging.getLogger(__name__).warning("cannot exec %s (%s): running in place", argv[0], exc)
        sys.exit(run(opts))


def _client(run_dir: str, timeout: float) -> ControlClient:
    from sriovdp.supervisor.client import ControlClient  # zmq: not needed before run's exec

    return ControlClient(Path(run_dir), timeout=timeout)


@click.command("status")
@options.run_dir
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Machine-readable output (docs/operations.md, Probes and status exit codes).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds to wait for the supervisor's answer.",
)
@click.option(
    "--check",
    type=click.Choice(["live", "ready"]),
    help="Probe mode, one line of output: 'live' exits 0 when the supervisor's loop answers (a "
    "kubelet that is down does not fail it), 4 when not; 'ready' exits 0 only when every pool "
    "is RUNNING and registered with the kubelet and the last reload was not refused, else 3 "
    "with the reason.",
)
def status_command(run_dir: str, as_json: bool, timeout: float, check: str | None) -> None:
    """Show the supervisor and its children.

    Exit 0: every child RUNNING; 3: something is not running; 4: no supervisor answered.
    """
    from sriovdp.supervisor.client import CommandFailed, Unreachable

    with _client(run_dir, timeout) as client:
        try:
            data = client.request("status")
            status = SupervisorStatus.from_dict(data)
        except (Unreachable, CommandFailed, ValueError) as exc:
            if as_json:
                click.echo(json.dumps({"version": 1, "error": str(exc)}))
            else:
                click.echo(f"supervisor unreachable: {exc}", err=True)
            sys.exit(exitcodes.UNREACHABLE)
    if check == "live":
        # the control socket is served by the supervisor's one loop: an answer means it turns
        click.echo(f"live: supervisor pid {status.pid} answered")
        sys.exit(exitcodes.OK)
    if check == "ready":
        reasons = status.not_ready()
        if reasons:
            click.echo("not ready: " + "; ".join(reasons))
            sys.exit(exitcodes.NOT_RUNNING)
        click.echo(f"ready: {sum(r.pool is not None for r in status.children)} pools registered")
        sys.exit(exitcodes.OK)
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=2))
    else:
        click.echo(render_table(status))
    sys.exit(status.exit_code())


@click.command("reload")
@options.run_dir
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the supervisor's answer.",
)
def reload_command(run_dir: str, timeout: float) -> None:
    """Re-read the config (as SIGHUP does). New pools start, removed ones stop, a renamed one
    restarts (new socket and registration); every pool whose devices may change takes the new
    config in place (same process, stream unbroken); the others are not touched.

    Exit 0: applied; 2: the new config is invalid (nothing changed); 4: no supervisor answered.
    """
    from sriovdp.supervisor.client import CommandFailed, Unreachable

    with _client(run_dir, timeout) as client:
        try:
            result = client.request("reload")
        except Unreachable as exc:
            click.echo(f"supervisor unreachable: {exc}", err=True)
            sys.exit(exitcodes.UNREACHABLE)
        except CommandFailed as exc:
            click.echo(f"reload refused: {exc}", err=True)
            sys.exit(exitcodes.INVALID_CONFIG)
    click.echo(f"config generation {result['generation']}")
    for key, label in (
        ("started", "started"),
        ("updated", "updated in place"),
        ("restarted", "restarted"),
        ("stopped", "stopped"),
        ("unchanged", "left alone"),
    ):
        if result.get(key):
            click.echo(f"  {label}: {', '.join(result[key])}")


@click.command("restart")
@options.run_dir
@click.argument("child")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds to wait for the supervisor's answer.",
)
def restart_command(run_dir: str, child: str, timeout: float) -> None:
    """Restart one child (also one in FATAL). Exit 1: no such child; 4: unreachable."""
    from sriovdp.supervisor.client import CommandFailed, Unreachable

    with _client(run_dir, timeout) as client:
        try:
            client.request("restart", name=child)
        except Unreachable as exc:
            click.echo(f"supervisor unreachable: {exc}", err=True)
            sys.exit(exitcodes.UNREACHABLE)
        except CommandFailed as exc:
            click.echo(f"restart refused: {exc}", err=True)
            sys.exit(exitcodes.FAILURE)
    click.echo(f"restarting {child}")


@click.command("demo")
@click.option(
    "--spawn-mode",
    type=click.Choice(SPAWN_MODES),
    default=DEFAULT_SPAWN_MODE,
    show_default=True,
    help="How the demo's supervisor starts children, as `run --spawn-mode`.",
)
@click.option("--keep", is_flag=True, help="Keep the temporary node directory and print its path.")
def demo_command(spawn_mode: str, keep: bool) -> None:
    """A simulated node end to end: fake sysfs (2 PFs x 8 VFs, mixed drivers), 3 pools, a kubelet
    stand-in speaking the real API, the full supervisor, one allocation, status, clean shutdown.

    Needs no root and no SR-IOV NIC.
    """
    from sriovdp.supervisor.demo import run_demo  # imports grpc: the CLI process only

    sys.exit(run_demo(spawn_mode=spawn_mode, keep=keep))


COMMANDS.extend([run_command, status_command, reload_command, restart_command, demo_command])
