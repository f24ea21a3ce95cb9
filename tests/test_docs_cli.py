"""docs/cli.md is generated from the click commands by docs/gen_cli.py and must be current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

from sriovdp.supervisor.cli import cli

REPO = Path(__file__).resolve().parents[1]
GEN = REPO / "docs" / "gen_cli.py"
CLI_MD = REPO / "docs" / "cli.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli", GEN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_md_is_current(gen: ModuleType) -> None:
    assert CLI_MD.read_text() == gen.render(), "docs/cli.md is stale: run python docs/gen_cli.py"


def test_every_command_option_and_envvar_is_documented(gen: ModuleType) -> None:
    text = gen.render()
    ctx = click.Context(cli, info_name="sriov-supervisor")
    names = cli.list_commands(ctx)
    assert names
    for name in names:
        command = cli.get_command(ctx, name)
        assert command is not None
        assert f"## `sriov-supervisor {name}`" in text
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts:
                    assert f"`{opt}`" in text, (name, opt)
                if param.envvar:
                    assert f"`{param.envvar}`" in text, (name, param.envvar)


def test_a_renamed_option_makes_the_docs_stale(gen: ModuleType) -> None:
    @click.group()
    def group() -> None:
        """A group."""

    @group.command("run")
    @click.option("--plugin-dir", envvar="SRIOV_DP_PLUGIN_DIR", default="/a", help="Where.")
    def run(plugin_dir: str) -> None:
        """Run."""

    before = gen.render(group)
    run.params[0].opts = ["--plugins-dir"]
    after = gen.render(group)
    assert before != after
    assert "`--plugins-dir`" in after and "`--plugin-dir`" not in after


def test_check_mode_exit_status() -> None:
    result = subprocess.run(
        [sys.executable, str(GEN), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
