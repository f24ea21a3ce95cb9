"""docs/configuration.md tells the truth: its JSON examples pass the real config parser, its field
tables name every key the parser accepts, and its validation-error example is what
``validate-config`` prints for the file it shows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sriovdp.shared import config as config_module
from sriovdp.shared.config import parse_config

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "configuration.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(DOC.read_text()) if kind == lang]


def json_examples() -> list[str]:
    return [b for b in blocks("json") if b.lstrip().startswith("{") and "<pool>" not in b]


def bad_example() -> tuple[str, str]:
    """The `bad.json` shown and the output shown for it."""
    (bad,) = [b for b in json_examples() if '"sriov net"' in b]
    (output,) = [b for b in blocks("text") if "validate-config --config-file bad.json" in b]
    return bad, output


def good_examples() -> list[str]:
    return [b for b in json_examples() if '"sriov net"' not in b]


@pytest.mark.parametrize("index", range(len(good_examples())))
def test_json_examples_parse(index: int) -> None:
    text = good_examples()[index]
    doc = json.loads(text)
    if "resourceList" not in doc:
        text = json.dumps({"resourceList": [doc]})
    config = parse_config(text, "example.json", "intel.com")
    assert config.pools


def test_every_accepted_key_is_documented() -> None:
    text = DOC.read_text()
    keys = (
        config_module._COMMON_KEYS
        + config_module._LEGACY_KEYS
        + config_module._SELECTOR_ENTRY_KEYS
        + config_module._SELECTOR_KEYS
    )
    for key in keys:
        assert f"| `{key}` |" in text, f"{key} has no row in docs/configuration.md"


def test_documented_keys_are_accepted() -> None:
    """A field in a table that the parser rejects would mislead: every row names a real key."""
    accepted = set(
        config_module._COMMON_KEYS
        + config_module._LEGACY_KEYS
        + config_module._SELECTOR_ENTRY_KEYS
        + config_module._SELECTOR_KEYS
    )
    rows = re.findall(r"^\| `(\w+)` \|", DOC.read_text(), re.MULTILINE)
    assert rows
    assert set(rows) <= accepted, set(rows) - accepted


def test_error_example_is_what_validate_config_prints(tmp_path: Path) -> None:
    bad, shown = bad_example()
    (tmp_path / "bad.json").write_text(bad)
    result = subprocess.run(
        [sys.executable, "-m", "sriovdp", "validate-config", "--config-file", "bad.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    expected = [line for line in shown.splitlines() if line and not line.startswith("$")]
    actual = [line for line in (result.stdout + result.stderr).splitlines() if line]
    assert actual == expected
