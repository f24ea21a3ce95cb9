"""images/Dockerfile, checked without a Docker engine: its stages and instructions parse, the
entrypoint is the project's console script, the builder stage's COPY set is enough to build the
wheel, and the entrypoint accepts every option and variable the DaemonSet passes."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.deployments.conftest import (
    REPO,
    cli_command,
    cli_group,
    envvars,
    plugin_container,
    run_command,
)

DOCKERFILE = REPO / "images" / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def logical_lines(text: str) -> list[str]:
    """Joins backslash continuations and drops comments and blank lines (Dockerfile rules)."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (name -> default) and the stages, each with its instructions."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for arg, default in args.items():
                base = base.replace("${" + arg + "}", default).replace("$" + arg, default)
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(w, str) for w in parsed), value
    return parsed


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE)[1]


def console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts: dict[str, str] = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


def test_multi_stage_on_slim_python_313(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name
    for stage in stages:
        assert stage.base.startswith("python:3.13-slim"), stage.base
    # the final stage takes only the builder's wheels, nothing else from it
    assert not final.all("COPY"), "the final stage copies files instead of installing wheels"
    (install,) = [r for r in final.all("RUN") if "pip install" in r]
    assert f"from={builder.name}" in install
    assert "--no-index" in install, "the final install must not reach a package index"


def test_no_build_tools_in_the_final_stage(stages: list[Stage]) -> None:
    final = " ".join(stages[-1].all("RUN"))
    for tool in ("build-essential", "gcc", "g++", "make ", "python3-dev", "libc6-dev"):
        assert tool not in final, tool
    # non-interactive: apt (if ever used) must not prompt
    env = " ".join(stages[-1].all("ENV"))
    assert "DEBIAN_FRONTEND=noninteractive" in env


def test_entrypoint_is_the_console_script_run(stages: list[Stage]) -> None:
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    words = exec_form(entrypoint)
    assert words == ["sriov-supervisor", "run"]
    for cmd in final.all("CMD"):
        assert exec_form(cmd) == []
    target = console_scripts()[words[0]]
    module, _, attr = target.partition(":")
    assert (module, attr) == ("sriovdp.supervisor.cli", "main")
    cli_command(words[1])  # fails when sriov-supervisor has no such command


def test_final_stage_runs_as_root_and_says_why() -> None:
    text = DOCKERFILE.read_text()
    assert "USER 0:0" in text or "USER root" in text
    assert "/var/lib/kubelet/device-plugins" in text


def test_builder_copy_set_builds_a_wheel_with_the_console_script(
    stages: list[Stage], tmp_path: Path
) -> None:
    """Builds the wheel the builder stage builds, from exactly the files it copies."""
    context = tmp_path / "context"
    context.mkdir()
    for copy in stages[0].all("COPY"):
        *sources, _dest = copy.split()
        for source in sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, context / source)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--wheel-dir", str(wheels), str(context)],
        check=True,
        timeout=120,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (wheel,) = wheels.glob("sriov_dp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "sriov-supervisor = sriovdp.supervisor.cli:main" in text
    assert "sriovdp/proto/api.proto" in names


def test_run_help_lists_every_option_and_variable_the_daemonset_passes() -> None:
    result = CliRunner().invoke(cli_group(), ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    by_env = envvars(run_command())
    for item in plugin_container()["env"]:
        param = by_env.get(item["name"])
        assert param is not None, f"`run` reads no {item['name']}"
        for opt in param.opts:
            assert opt in result.output, opt
        # operators find the variable names in `--help` (and docs/cli.md)
        assert item["name"] in result.output, f"`run --help` does not show {item['name']}"


def test_console_script_takes_the_daemonset_environment(tmp_path: Path) -> None:
    """The installed entrypoint, as a process, with the DaemonSet's environment: every value is
    accepted (a click usage error would exit 2 with "Invalid value"), and it stops at the config."""
    script = VENV_BIN / "sriov-supervisor"
    if not script.exists():
        pytest.skip("the package is not installed in this interpreter's environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_DP_")}
    env.update({item["name"]: item["value"] for item in plugin_container()["env"]})
    bad_config = tmp_path / "config.json"
    bad_config.write_text('{"resourceList": [{"resourceName": "bad name!"}]}')
    env["SRIOV_DP_CONFIG_FILE"] = str(bad_config)
    env["SRIOV_DP_RUN_DIR"] = str(tmp_path / "run")
    # the pod's mount of the host's /dev (/host/dev) is not on the machine running the tests
    (tmp_path / "host" / "dev").mkdir(parents=True)
    env["SRIOV_DP_DEV_ROOT"] = str(tmp_path / "host")
    result = subprocess.run(
        [str(script), "run"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Invalid value" not in result.stderr, result.stderr
    assert "No such option" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert str(bad_config) in result.stdout + result.stderr


def test_dockerignore_lets_the_copied_paths_in(stages: list[Stage]) -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copy in stages[0].all("COPY"):
        *sources, _dest = copy.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is copied but ignored"
