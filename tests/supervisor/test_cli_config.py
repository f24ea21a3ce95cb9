"""``sriov-supervisor validate-config`` and ``discover``: text, JSON, exit codes, the real /sys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sriovdp.shared import exitcodes
from sriovdp.simnode import demo_config, demo_node
from sriovdp.supervisor.cli import cli

DEVICE_KEYS = {"id", "vendor", "device", "driver", "pf", "pfName", "vfIndex", "netdev",
               "linkType", "numaNode", "iommuGroup", "healthLink", "healthLinkState"}  # fmt: skip
POOL_KEYS = {"resource", "devices", "excluded", "notFound", "missingDeviceNodes"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def write(tmp_path: Path, doc: Any, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


@pytest.fixture
def demo(tmp_path: Path) -> tuple[str, str, str]:
    """(config file, sysfs root, proc root without a default route)."""
    demo_node(tmp_path / "sys")
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/route").write_text("Iface\tDestination\tGateway\tFlags\n")
    return write(tmp_path, demo_config()), str(tmp_path / "sys"), str(tmp_path / "proc")


def test_validate_config_ok(demo: tuple[str, str, str]) -> None:
    result = invoke("validate-config", "--config-file", demo[0])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{demo[0]}: valid, 3 pool(s)",
        "  intel.com/sriov_net_A (legacy, allocationPolicy packed)",
        "  intel.com/sriov_vfio (selectors, allocationPolicy packed)",
        "  intel.com/sriov_uio (selectors, allocationPolicy balanced)",
    ]


def test_validate_config_lists_every_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"resourceList": [{"resourceName": "a.b", "selectors": {"pfNames": ["x#2-1"]}}]},
    )
    result = invoke("validate-config", "--config-file", path)
    assert result.exit_code == exitcodes.INVALID_CONFIG == 2
    assert result.stderr.splitlines() == [
        f'{path}: resourceList[0].resourceName: "a.b": must match ^[A-Za-z0-9_-]+$ '
        "(letters, digits, '_' and '-')",
        f"{path}: resourceList[0].selectors.pfNames[0]: \"x#2-1\": VF range '2-1' is backwards "
        "(2 > 1)",
        f"2 problem(s) in {path}",
    ]


def test_validate_config_from_env_missing_file_and_prefix(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.json")
    result = invoke("validate-config", env={"SRIOV_DP_CONFIG_FILE": missing})
    assert result.exit_code == 2
    assert f"{missing}: cannot read: No such file or directory" in result.stderr
    path = write(tmp_path, {"resourceList": [{"resourceName": "a", "selectors": {}}]})
    assert invoke("validate-config", "--config-file", path).exit_code == 0
    bad_prefix = invoke("validate-config", "--config-file", path, "--resource-prefix", "x/y")
    assert bad_prefix.exit_code == 2


def test_validate_config_empty_list_warns(tmp_path: Path) -> None:
    path = write(tmp_path, {"resourceList": []})
    result = invoke("validate-config", "--config-file", path)
    assert result.exit_code == 0
    assert "warning: " in result.stderr and "resourceList is empty" in result.stderr


def test_discover_text(demo: tuple[str, str, str]) -> None:
    config, sys_root, proc = demo
    args = ("--config-file", config, "--sysfs-root", sys_root, "--proc-root", proc)
    result = invoke("discover", *args)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "intel.com/sriov_net_A: 8 device(s)"
    assert lines[1].split() == ["ID", "DRIVER", "PF", "PF", "NAME", "VF", "NETDEV", "NUMA",
                                "IOMMU", "HEALTH", "LINK"]  # fmt: skip
    assert lines[2].split() == ["0000:04:00.0", "iavf", "0000:03:00.0", "sim0pf0", "0",
                                "sim0pf0v0", "0", "1", "sim0pf0:up"]  # fmt: skip
    assert "  excluded:" in lines
    assert "    0000:04:00.4: driver vfio-pci contradicts deviceType netdevice" in lines
    vfio = lines.index("intel.com/sriov_vfio: 4 device(s)")
    assert lines[vfio + 2].split() == ["0000:04:00.4", "vfio-pci", "0000:03:00.0", "sim0pf0",
                                       "4", "-", "0", "5", "sim0pf0:up"]  # fmt: skip
    assert "intel.com/sriov_uio: 4 device(s)" in lines
    assert "warnings:" not in lines


def test_discover_shows_warnings_and_the_link_that_decides_health(
    demo: tuple[str, str, str],
) -> None:
    """A VF's health follows its PF's netdev, not its own (an unused VF's netdev is often down):
    the table shows the PF's link for every VF, with or without a netdev of its own."""
    config, sys_root, proc = demo
    devices = Path(sys_root) / "bus/pci/devices"
    vf = devices / "0000:04:00.1"
    (vf / "numa_node").write_text("x\n")
    (vf / "net/sim0pf0v1/operstate").write_text("down\n")
    args = ("--config-file", config, "--sysfs-root", sys_root, "--proc-root", proc)
    lines = invoke("discover", *args).stdout.splitlines()
    row = next(line for line in lines if line.startswith("  0000:04:00.1"))
    assert row.split()[-3:] == ["-", "2", "sim0pf0:up"]
    assert lines[-2:] == ["warnings:", "  0000:04:00.1: numa_node is not a number: 'x'"]

    (devices / "0000:03:00.0/net/sim0pf0/operstate").write_text("down\n")
    lines = invoke("discover", *args).stdout.splitlines()
    pf0_vfs = [line for line in lines if "  0000:03:00.0  sim0pf0" in line]
    assert len(pf0_vfs) >= 2 and all(line.endswith("sim0pf0:down") for line in pf0_vfs)
    assert not [line for line in lines if line.endswith(":down") and line not in pf0_vfs]
    doc = json.loads(invoke("discover", "--json", *args).stdout)
    states = {d["id"]: (d["healthLink"], d["healthLinkState"]) for p in doc["pools"]
              for d in p["devices"]}  # fmt: skip
    assert states["0000:04:00.1"] == ("sim0pf0", "down")


def test_discover_with_an_unreadable_link_state_shows_a_question_mark(
    demo: tuple[str, str, str],
) -> None:
    config, sys_root, proc = demo
    (Path(sys_root) / "bus/pci/devices/0000:03:00.0/net/sim0pf0/operstate").unlink()
    args = ("--config-file", config, "--sysfs-root", sys_root, "--proc-root", proc)
    result = invoke("discover", *args)
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if line.startswith("  0000:04:00.1"))
    assert row.split()[-1] == "sim0pf0:?"
    doc = json.loads(invoke("discover", "--json", *args).stdout)
    dev = next(d for p in doc["pools"] for d in p["devices"] if d["id"] == "0000:04:00.1")
    assert (dev["healthLink"], dev["healthLinkState"]) == ("sim0pf0", None)


def test_discover_json(demo: tuple[str, str, str]) -> None:
    config, sys_root, proc = demo
    result = invoke("discover", "--json", "--config-file", config, "--sysfs-root", sys_root,
                    "--proc-root", proc)  # fmt: skip
    doc = json.loads(result.stdout)
    assert list(doc) == ["pools"]
    assert [p["resource"] for p in doc["pools"]] == [
        "intel.com/sriov_net_A",
        "intel.com/sriov_vfio",
        "intel.com/sriov_uio",
    ]
    for pool in doc["pools"]:
        assert set(pool) == POOL_KEYS
        assert all(set(d) == DEVICE_KEYS for d in pool["devices"])
        assert all(set(e) == {"id", "reason"} for e in pool["excluded"])
    assert doc["pools"][1]["devices"][0] == {
        "id": "0000:04:00.4",
        "vendor": "8086",
        "device": "154c",
        "driver": "vfio-pci",
        "pf": "0000:03:00.0",
        "pfName": "sim0pf0",
        "vfIndex": 4,
        "netdev": None,
        "linkType": None,
        "numaNode": 0,
        "iommuGroup": "5",
        "healthLink": "sim0pf0",
        "healthLinkState": "up",
    }
    assert doc["pools"][0]["excluded"][0] == {
        "id": "0000:04:00.4",
        "reason": "driver vfio-pci contradicts deviceType netdevice",
    }


def test_discover_prefix_and_invalid_config(demo: tuple[str, str, str], tmp_path: Path) -> None:
    config, sys_root, proc = demo
    result = invoke("discover", "--json", "--config-file", config, "--sysfs-root", sys_root,
                    "--proc-root", proc, "--resource-prefix", "example.com")  # fmt: skip
    assert json.loads(result.stdout)["pools"][0]["resource"] == "example.com/sriov_net_A"
    bad = write(tmp_path, "{", "bad.json")
    result = invoke("discover", "--config-file", bad, "--sysfs-root", sys_root)
    assert result.exit_code == 2
    assert f"{bad}: line 1, column 2: invalid JSON" in result.stderr


def _real_network_functions() -> set[str]:
    out = set()
    for dev in Path("/sys/bus/pci/devices").iterdir():
        try:
            if int((dev / "class").read_text(), 16) >> 16 == 0x02:
                out.add(dev.name)
        except (OSError, ValueError):
            continue
    return out


def test_discover_on_the_real_sys(tmp_path: Path) -> None:
    """Read-only: every PCI network function of this machine is either offered or excluded."""
    if not Path("/sys/bus/pci/devices").is_dir():
        pytest.skip("no /sys/bus/pci on this machine")
    expected = _real_network_functions()
    path = write(tmp_path, {"resourceList": [{"resourceName": "all_net", "selectors": {}}]})
    result = invoke("discover", "--json", "--config-file", path, "--sysfs-root", "/sys")
    assert result.exit_code == 0
    (pool,) = json.loads(result.stdout)["pools"]
    offered = {d["id"] for d in pool["devices"]}
    excluded = {e["id"] for e in pool["excluded"]}
    assert offered | excluded == expected
    assert not offered & excluded
    text = invoke("discover", "--config-file", path, "--sysfs-root", "/sys")
    assert text.exit_code == 0
    for address in expected:
        assert address in text.stdout
