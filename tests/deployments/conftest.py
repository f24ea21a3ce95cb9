"""Shared helpers for the deployment tests: the repo's manifests and the CLI's real commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
DAEMONSET_FILE = DEPLOYMENTS / "sriovdp-daemonset.yaml"
CONFIGMAP_FILE = DEPLOYMENTS / "configMap.yaml"
NAD_FILE = DEPLOYMENTS / "sriov-crd.yaml"


def load_all(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(path: Path, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in load_all(path) if doc["kind"] == kind]


def daemonset() -> dict[str, Any]:
    (ds,) = find(DAEMONSET_FILE, "DaemonSet")
    return ds


def plugin_container() -> dict[str, Any]:
    (container,) = daemonset()["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def cli_group() -> click.Group:
    from sriovdp.supervisor.cli import cli

    return cli


def cli_command(name: str) -> click.Command:
    """A real subcommand of ``sriov-supervisor`` (fails the test when it does not exist)."""
    from sriovdp.supervisor.cli import command as lookup

    command = lookup(name)
    assert command is not None, f"sriov-supervisor has no {name!r} command"
    return command


def envvars(command: click.Command) -> dict[str, click.Parameter]:
    """``SRIOV_DP_*`` variable -> the option that reads it."""
    found: dict[str, click.Parameter] = {}
    for param in command.params:
        names = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
        for name in names:
            if name:
                found[str(name)] = param
    return found


def run_command() -> click.Command:
    """``sriov-supervisor run``: the entrypoint of the image and the supervisord program."""
    return cli_command("run")
