"""``run --metrics-address`` / ``--no-metrics`` (CLI process) and the address syntax
(``sriovdp.workers.metrics.address``): a bad address is a usage error before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sriovdp.shared.model import NodeConfig
from sriovdp.supervisor.cli_run import run_command
from sriovdp.supervisor.main import build_specs
from sriovdp.supervisor.runopts import INFRA_ROLES, RunOptions
from sriovdp.workers.metrics.address import DEFAULT_METRICS_ADDRESS, split_address


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0.0.0.0:9830", ("0.0.0.0", 9830)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::]:9830", ("::", 9830)),
        ("[fe80::1]:1", ("fe80::1", 1)),
        ("node1.example:65535", ("node1.example", 65535)),
    ],
)
def test_good_addresses(text: str, want: tuple[str, int]) -> None:
    assert split_address(text) == want


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("9830", "is not HOST:PORT"),
        (":9830", "is not HOST:PORT"),
        ("0.0.0.0:", "is not a number"),
        ("0.0.0.0:http", "is not a number"),
        ("0.0.0.0:65536", "is not a number from 0 to 65535"),
        ("0.0.0.0:-1", "is not a number"),
        ("::1:9830", "write an IPv6 host in brackets"),
    ],
)
def test_bad_addresses(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        split_address(text)


@pytest.mark.parametrize("how", ["option", "env"])
def test_run_refuses_a_bad_address_before_starting(how: str) -> None:
    runner = CliRunner()
    if how == "option":
        result = runner.invoke(run_command, ["--metrics-address", "nonsense"])
    else:
        result = runner.invoke(run_command, [], env={"SRIOV_DP_METRICS_ADDRESS": "1.2.3.4:99999"})
    assert result.exit_code == 2, result.output
    assert "--metrics-address" in result.output


def _opts(infra: tuple[str, ...] = INFRA_ROLES, address: str = "127.0.0.1:0") -> RunOptions:
    return RunOptions(
        config_file="/c.json",
        resource_prefix="intel.com",
        plugin_dir="/p",
        sysfs_root="/sys",
        proc_root="/proc",
        run_dir="/r",
        devinfo_dir="/d",
        cdi_dir="/cdi",
        infra=infra,
        metrics_address=address,
    )


def test_the_metrics_child_gets_its_address() -> None:
    assert RunOptions("", "", "", "", "", "", "", "").metrics_address == DEFAULT_METRICS_ADDRESS
    specs = {s.name: s for s in build_specs(NodeConfig(pools=(), path="/c.json", text=""), _opts())}
    assert specs["metrics"].role == "metrics"
    argv = specs["metrics"].argv
    assert argv[argv.index("--metrics-address") + 1] == "127.0.0.1:0"


def test_without_metrics_there_is_no_metrics_child() -> None:
    infra = tuple(r for r in INFRA_ROLES if r != "metrics")
    specs = build_specs(NodeConfig(pools=(), path="/c.json", text=""), _opts(infra))
    assert [s.name for s in specs] == ["health-monitor", "kubelet-watcher"]
