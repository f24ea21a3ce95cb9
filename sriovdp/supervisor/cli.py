"""The ``sriov-supervisor`` command line (CLI process; imports no grpc or pyroute2).

Commands live in small modules by topic and attach themselves to :data:`cli`:
``cli_config`` (validate-config, discover), ``cli_run`` (run, status, reload, restart, demo).
"""

from __future__ import annotations

import click

from sriovdp import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sriov-supervisor")
def cli() -> None:
    """SR-IOV device plugin for Kubernetes: one isolated worker process per resource pool."""


def _register() -> None:
    from sriovdp.supervisor import cli_config, cli_run

    for module in (cli_config, cli_run):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli()
