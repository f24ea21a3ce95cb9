"""The CLI imports a command's module on first lookup: ``run`` (the long-lived supervisor) does
not carry ``discover``'s code, and every command is still found."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from click.testing import CliRunner

from sriovdp.supervisor.cli import COMMAND_MODULES, cli


def test_every_command_module_defines_exactly_the_mapped_commands() -> None:
    for module_name in set(COMMAND_MODULES.values()):
        module = importlib.import_module(module_name)
        defined = {command.name for command in module.COMMANDS}
        mapped = {name for name, mod in COMMAND_MODULES.items() if mod == module_name}
        assert defined == mapped, module_name


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMAND_MODULES:
        assert name in result.output


_PROBE = """
import json, sys
import click
from sriovdp.supervisor.cli import cli
cli.get_command(click.Context(cli), "run")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("sriovdp."))))
"""


def test_run_does_not_import_the_discovery_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert "sriovdp.supervisor.cli_run" in loaded
    assert "sriovdp.supervisor.cli_config" not in loaded
    assert "sriovdp.shared.sysfs" not in loaded
