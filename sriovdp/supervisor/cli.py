"""The ``sriov-supervisor`` command line (CLI process; imports no grpc or pyroute2).

Commands live in small modules by topic and attach themselves to :data:`cli`:
``cli_config`` (validate-config, discover), ``cli_run`` (run, status, reload, restart, demo).
A module is imported when one of its commands is looked up, so ``run`` (which becomes the
supervisor, a process that lives as long as the node) does not carry ``discover``'s sysfs and pool
code; ``--help`` loads them all.
"""

from __future__ import annotations

import importlib

import click

from sriovdp import __version__

#: command name -> the module whose ``COMMANDS`` defines it
COMMAND_MODULES = {
    "validate-config": "sriovdp.supervisor.cli_config",
    "discover": "sriovdp.supervisor.cli_config",
    "run": "sriovdp.supervisor.cli_run",
    "status": "sriovdp.supervisor.cli_run",
    "reload": "sriovdp.supervisor.cli_run",
    "restart": "sriovdp.supervisor.cli_run",
    "demo": "sriovdp.supervisor.cli_run",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first lookup (click's documented lazy pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            module = importlib.import_module(COMMAND_MODULES[cmd_name])
            for command in module.COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="sriov-supervisor")
def cli() -> None:
    """SR-IOV device plugin for Kubernetes: one isolated worker process per resource pool."""


def command(name: str) -> click.Command | None:
    """The subcommand called ``name`` (imported on demand), or None: for docs and tests."""
    with click.Context(cli) as ctx:
        return cli.get_command(ctx, name)


def main() -> None:
    """Console-script entry point."""
    cli()
