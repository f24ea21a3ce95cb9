"""``validate-config`` and ``discover`` (CLI process)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
