"""Writes docs/cli.md from the click commands of ``sriov-supervisor`` (run by hand or by tests).

    python docs/gen_cli.py            # rewrite docs/cli.md
    python docs/gen_cli.py --check    # exit 1 when docs/cli.md is stale

The text depends only on the command objects (names, options, env vars, defaults, help) and on
``sriovdp.shared.exitcodes``, never on the terminal width, so it is stable across machines.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import click

DOCS = Path(__file__).resolve().parent
TARGET = DOCS / "cli.md"
PROG = "sriov-supervisor"


def _cell(text: str) -> str:
    """One table cell: one line, ``|`` and ``<>`` escaped, reST double backticks as Markdown."""
    text = " ".join(text.split()).replace("``", "`").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _help(text: str | None) -> str:
    """Click help text as Markdown paragraphs (``\\b`` blocks kept verbatim)."""
    if not text:
        return ""
    text = inspect.cleandoc(text).split("\f")[0]
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        if paragraph.startswith("\b\n"):
            out.append("```text\n" + paragraph[2:] + "\n```")
        else:
            out.append(" ".join(paragraph.split()))
    return "\n\n".join(out)


def _default(param: click.Parameter, ctx: click.Context) -> str:
    default = param.get_default(ctx, call=False)
    if isinstance(param, click.Option) and param.is_flag:
        if param.secondary_opts:
            return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
        return "on" if default else "off"
    if default is None or callable(default) or default == () or "UNSET" in repr(default):
        return ""  # no default (click 8.3 says so with a sentinel)
    return f"`{default}`"


def _type(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param.type, click.Choice):
        return " \\| ".join(f"`{c}`" for c in param.type.choices)
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    return param.make_metavar(ctx).lower()


def _envvars(param: click.Parameter) -> str:
    names = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
    return ", ".join(f"`{n}`" for n in names if n)


def _names(param: click.Parameter) -> str:
    names = list(param.opts)
    if isinstance(param, click.Option):
        names += param.secondary_opts
    return " / ".join(f"`{n}`" for n in names)


def _command(name: str, command: click.Command, parent: click.Context) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=parent)
    pieces = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## `{PROG} {name}`", "", "```text", f"{PROG} {name} {pieces}".rstrip(), "```", ""]
    if help_text := _help(command.help):
        lines += [help_text, ""]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["| Argument | Value | Required |", "|---|---|---|"]
        for arg in arguments:
            value = _type(arg, ctx)
            lines.append(
                f"| `{arg.human_readable_name}` | {value} | {'yes' if arg.required else 'no'} |"
            )
        lines.append("")
    options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    if options:
        lines += [
            "| Option | Environment | Value | Default | Description |",
            "|---|---|---|---|---|",
        ]
        for opt in options:
            lines.append(
                f"| {_names(opt)} | {_envvars(opt)} | {_type(opt, ctx)} | {_default(opt, ctx)} "
                f"| {_cell(opt.help or '')} |"
            )
        lines.append("")
    return lines


#: meanings of the codes exitcodes.py leaves uncommented
_PLAIN_CODES = {"OK": "success", "FAILURE": "any other failure"}


def _exit_codes() -> list[str]:
    """The constants of ``sriovdp.shared.exitcodes`` with their ``#:`` or trailing comments."""
    from sriovdp.shared import exitcodes

    source = Path(inspect.getfile(exitcodes)).read_text()
    text_lines = source.splitlines()
    rows: list[str] = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        line = text_lines[node.lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        above = node.lineno - 2
        notes: list[str] = []
        while above >= 0 and text_lines[above].lstrip().startswith("#:"):
            notes.insert(0, text_lines[above].lstrip()[2:].strip())
            above -= 1
        meaning = " ".join(notes) or comment or _PLAIN_CODES.get(name, "")
        rows.append(f"| {getattr(exitcodes, name)} | `{name}` | {_cell(meaning)} |")
    return ["## Exit codes", "", "| Code | Name | Meaning |", "|---|---|---|", *rows, ""]


def render(group: click.Group | None = None) -> str:
    """The whole of docs/cli.md."""
    if group is None:
        from sriovdp.supervisor.cli import cli

        group = cli
    ctx = click.Context(group, info_name=PROG)
    commands = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    lines = [
        f"# `{PROG}` command reference",
        "",
        "<!-- Generated by docs/gen_cli.py from the click commands: do not edit by hand. -->",
        "<!-- Regenerate with `.venv/bin/python docs/gen_cli.py`; a test fails when stale. -->",
        "",
        _help(group.help),
        "",
        "Every option can also be set through the environment variable shown beside it",
        "(`SRIOV_DP_<OPTION>`); a command-line option wins over the environment. This is how",
        "the DaemonSet (`deployments/sriovdp-daemonset.yaml`) and the supervisord program",
        "(`conf/supervisord.conf`) configure the plugin.",
        "",
        "| Command | Summary |",
        "|---|---|",
    ]
    for name, command in commands:
        if command is not None and not command.hidden:
            lines.append(
                f"| [`{name}`](#{PROG}-{name}) | {_cell(command.get_short_help_str(200))} |"
            )
    lines.append("")
    for name, command in commands:
        if command is not None and not command.hidden:
            lines += _command(name, command, ctx)
    lines += _exit_codes()
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
