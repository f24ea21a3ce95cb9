"""``discover`` explains every empty pool and every device it leaves out, reports device nodes
the host lacks, and ``discover``/``run`` refuse node roots that do not exist (CLI process, fake
sysfs trees shaped like the kernel's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sriovdp.simnode import demo_node
from sriovdp.supervisor.cli import cli

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    """A demo node plus a PF without VFs; an empty proc root; a host /dev with only vfio."""
    sys_root = tmp_path / "sys"
    n = demo_node(sys_root)
    n.add_pf("0000:06:00.0", netdev="empty0", num_vfs=0, total_vfs=4)
    n.add_function("0000:20:00.0", driver="qat_4xxx", pci_class=0x120000, device="4940")
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/route").write_text("Iface\tDestination\tGateway\tFlags\n")
    (tmp_path / "host/dev/vfio").mkdir(parents=True)
    (tmp_path / "host/dev/vfio/vfio").touch()
    config = {"resourceList": [
        {"resourceName": "novfs", "rootDevices": ["06:00.0"], "sriovMode": True},
        {"resourceName": "gone", "selectors": {"pciAddresses": ["0000:99:00.0"]}},
        {"resourceName": "fec", "selectors": {"devices": ["4940"]}},
        {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"], "needVhostNet": True}},
        {"resourceName": "none", "selectors": {"vendors": ["abcd"]}},
    ]}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    return {"config": tmp_path / "config.json", "sys": sys_root, "proc": tmp_path / "proc",
            "dev": tmp_path / "host"}  # fmt: skip


def args(node: dict[str, Path]) -> list[str]:
    return ["--config-file", str(node["config"]), "--sysfs-root", str(node["sys"]),
            "--proc-root", str(node["proc"]), "--dev-root", str(node["dev"])]  # fmt: skip


def pool_lines(text: str, resource: str) -> list[str]:
    block = text.split(f"{resource}: ", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()


def test_every_empty_pool_says_why_in_text(node: dict[str, Path]) -> None:
    out = invoke("discover", *args(node))
    assert out.exit_code == 0, out.output
    novfs = pool_lines(out.stdout, "intel.com/novfs")
    assert novfs[0] == "0 device(s)"
    assert (
        "    0000:06:00.0: sriovMode true: PF with no VFs (sriov_numvfs 0); the pool takes "
        "its VFs when they are created, without a restart" in novfs
    )
    assert novfs[-1].startswith("  hint: every device the pool matched is left out")
    gone = pool_lines(out.stdout, "intel.com/gone")
    assert "  not found on this node: 0000:99:00.0" in gone
    assert gone[-1].startswith("  hint: the pool names devices that are not on this node")
    fec = pool_lines(out.stdout, "intel.com/fec")
    assert (
        "    0000:20:00.0: PCI class 0x120000 is not a network controller (0x02), which "
        "deviceType netDevice offers" in fec
    )
    none = pool_lines(out.stdout, "intel.com/none")
    assert none[-1].startswith("  hint: no PCI function matches its selectors")
    # a pool with devices gets no hint
    assert not any("hint:" in line for line in pool_lines(out.stdout, "intel.com/dpdk"))


def test_missing_device_nodes_are_reported_once_per_pool(node: dict[str, Path]) -> None:
    out = invoke("discover", *args(node))
    dpdk = pool_lines(out.stdout, "intel.com/dpdk")
    missing = [line for line in dpdk if "does not exist on the host" in line]
    # 4 vfio-pci VFs: /dev/vfio/vfio exists; the groups, vhost-net and tun do not
    assert (
        "  warning: device node /dev/vhost-net does not exist on the host (4 device(s) "
        "want it)" in missing
    )
    assert (
        "  warning: device node /dev/net/tun does not exist on the host (4 device(s) "
        "want it)" in missing
    )
    assert not any("/dev/vfio/vfio " in line for line in missing)
    assert sum("/dev/vfio/" in line for line in missing) == 4  # one IOMMU group per VF
    (node["dev"] / "dev/vhost-net").touch()
    out = invoke("discover", *args(node))
    assert "/dev/vhost-net" not in "\n".join(pool_lines(out.stdout, "intel.com/dpdk"))


def test_discover_json_has_every_reason(node: dict[str, Path]) -> None:
    out = invoke("discover", "--json", *args(node))
    pools: dict[str, Any] = {p["resource"]: p for p in json.loads(out.stdout)["pools"]}
    assert pools["intel.com/gone"]["notFound"] == ["0000:99:00.0"]
    assert pools["intel.com/novfs"]["notFound"] == []
    assert [e["id"] for e in pools["intel.com/novfs"]["excluded"]] == ["0000:06:00.0"]
    missing = {m["path"]: m["devices"] for m in pools["intel.com/dpdk"]["missingDeviceNodes"]}
    assert missing["/dev/vhost-net"] == [d["id"] for d in pools["intel.com/dpdk"]["devices"]]
    assert "/dev/vfio/vfio" not in missing
    dev = pools["intel.com/dpdk"]["devices"][0]
    assert (dev["vendor"], dev["device"], dev["linkType"]) == ("8086", "154c", None)


def test_discover_json_fields_are_the_documented_ones(node: dict[str, Path]) -> None:
    """docs/operations.md lists every key of ``discover --json``; nothing more, nothing less."""
    doc = (REPO / "docs/operations.md").read_text()
    blocks = doc.split("### `discover --json`", 1)[1].split("\n\n")
    table = next(b for b in blocks if b.startswith("|"))
    documented = {
        cell.strip("` ")
        for line in table.splitlines()[2:]
        for cell in line.split("|")[1].split(",")
    }
    out = json.loads(invoke("discover", "--json", *args(node)).stdout)
    seen = {k for p in out["pools"] for k in p}
    seen |= {k for p in out["pools"] for d in p["devices"] for k in d}
    seen |= {k for p in out["pools"] for m in p["missingDeviceNodes"] for k in m}
    assert seen <= documented, seen - documented
    always = {"resource", "devices", "excluded", "notFound", "missingDeviceNodes", "id",
              "vendor", "device", "driver", "linkType", "pfName", "vfIndex", "path"}  # fmt: skip
    assert always <= seen


@pytest.mark.parametrize("option", ["--sysfs-root", "--proc-root", "--dev-root"])
def test_discover_refuses_a_root_that_does_not_exist(
    node: dict[str, Path], tmp_path: Path, option: str
) -> None:
    argv = args(node)
    argv[argv.index(option) + 1] = str(tmp_path / "nope")
    out = invoke("discover", *argv)
    assert out.exit_code == 2
    assert f"Invalid value for '{option}'" in out.stderr
    assert f"'{tmp_path / 'nope'}' does not exist" in out.stderr


@pytest.mark.parametrize("option", ["--sysfs-root", "--proc-root", "--dev-root"])
def test_run_refuses_a_root_that_does_not_exist_before_anything_starts(
    node: dict[str, Path], tmp_path: Path, option: str
) -> None:
    argv = [*args(node), "--run-dir", str(tmp_path / "run")]
    argv += ["--plugin-dir", str(tmp_path / "plugins")]
    argv[argv.index(option) + 1] = str(tmp_path / "nope")
    done = subprocess.run(
        [sys.executable, "-m", "sriovdp", "run", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"Invalid value for '{option}'" in done.stderr
    assert str(tmp_path / "nope") in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_run_names_the_environment_variable_too(node: dict[str, Path], tmp_path: Path) -> None:
    argv = [a for a in args(node) if a != "--sysfs-root" and a != str(node["sys"])]
    done = subprocess.run(
        [sys.executable, "-m", "sriovdp", "run", *argv, "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
        env={"SRIOV_DP_SYSFS_ROOT": str(tmp_path / "nope"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "--sysfs-root" in done.stderr and str(tmp_path / "nope") in done.stderr
