"""The plugin worker's option parsing (:func:`sriovdp.workers.plugin.main.parse_args`): one parser,
built when the module is imported, serves every parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from sriovdp.shared import model
from sriovdp.workers.plugin import main


def test_defaults_and_options() -> None:
    args = main.parse_args(["--name", "intel-com_a", "--use-cdi", "--rescan-interval", "5"])
    assert args.name == "intel-com_a"
    assert args.use_cdi is True
    assert args.rescan_interval == 5.0
    assert args.plugin_dir == Path(model.DEFAULT_PLUGIN_DIR)
    assert args.run_dir is None
    assert args.driver_module == []


def test_one_parse_leaves_nothing_behind_for_the_next() -> None:
    first = main.parse_args(["--pool", "a", "--driver-module", "x", "--driver-module", "y"])
    second = main.parse_args(["--name", "b"])
    assert first.driver_module == ["x", "y"]
    assert second.driver_module == []
    assert (second.name, second.use_cdi) == ("b", False)
    assert main.PARSER.get_default("driver_module") == []


def test_bad_options_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main.parse_args([])
    with pytest.raises(SystemExit) as bad_number:
        main.parse_args(["--name", "a", "--heartbeat-interval", "often"])
    assert (missing.value.code, bad_number.value.code) == (2, 2)
    err = capsys.readouterr().err
    assert "--name" in err and "invalid float value: 'often'" in err
