"""``validate-config`` and ``discover`` with the upstream README's config on a node with a device
of every kind: every pool validates, SFs show with their parent and SF number, exclusions carry
their reasons, additionalInfo ids that match nothing are noted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sriovdp.simnode import upstream_node, upstream_readme_config
from sriovdp.supervisor.cli import cli

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, list[str]]:
    """(config file, the sysfs and proc options)."""
    upstream_node(tmp_path / "sys")
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/route").write_text("Iface\tDestination\tGateway\tFlags\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(upstream_readme_config(), indent=2))
    return config, ["--sysfs-root", str(tmp_path / "sys"), "--proc-root", str(tmp_path / "proc")]


def test_validate_config_accepts_every_readme_pool(node: tuple[Path, list[str]]) -> None:
    config, _ = node
    result = subprocess.run(
        [sys.executable, "-m", "sriovdp", "validate-config", "--config-file", str(config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{config}: valid, 10 pool(s)"
    assert "  nvidia.com/bf2_sf (selectors, allocationPolicy packed)" in result.stdout
    assert result.stderr.splitlines() == [
        f'warning: {config}: resourceList[2]: drivers "mlx5_ib" never matches: it is not a PCI '
        'driver (such functions are bound to "mlx5_core")'
    ]


def test_discover_text(node: tuple[Path, list[str]]) -> None:
    config, opts = node
    lines = invoke("discover", "--config-file", str(config), *opts).stdout.splitlines()
    start = lines.index("nvidia.com/bf2_sf: 3 device(s)")
    assert [" ".join(line.split()) for line in lines[start : start + 7]] == [
        "nvidia.com/bf2_sf: 3 device(s)",
        "ID DRIVER PF PF NAME VF NETDEV NUMA IOMMU HEALTH LINK",
        "mlx5_core.sf.0 mlx5_core.sf 0000:03:00.0 p0 1 en3f0pf0sf1 0 - p0:up",
        "mlx5_core.sf.1 mlx5_core.sf 0000:03:00.0 p0 2 en3f0pf0sf2 0 - p0:up",
        "mlx5_core.sf.3 mlx5_core.sf 0000:03:00.0 p0 4 en3f0pf0sf4 0 - p0:up",
        "excluded:",
        "mlx5_core.sf.2: no driver bound",
    ]
    start = lines.index("intel.com/ct6dx_vdpa_vhost: 2 device(s)")
    assert [" ".join(line.split()) for line in lines[start + 1 : start + 7]] == [
        "ID DRIVER PF PF NAME VF NETDEV NUMA IOMMU EXTRA HEALTH LINK",
        "0000:5f:00.0 mlx5_core 0000:5e:00.0 enp94s0f0 0 enp94s0f0v0 0 25 vdpa:vdpa0 enp94s0f0:up",
        "0000:5f:00.1 mlx5_core 0000:5e:00.0 enp94s0f0 1 enp94s0f0v1 0 26 vdpa:vdpa1 enp94s0f0:up",
        "excluded:",
        "0000:5f:00.2: vDPA device vdpa2 is bound to virtio_vdpa, not vhost",
        "0000:5f:00.3: no vDPA device (vdpaType vhost)",
    ]
    assert "mellanox.com/mlnx_sriov_rdma: 0 device(s)" in lines
    assert "intel.com/infiniband_rdma_netdevs: 4 device(s)" in lines
    assert "broadcom.com/brcm_sriov_bnxt: 1 device(s)" in lines
    assert "intel.com/intel_fpga: 2 device(s)" in lines
    assert "warnings:" not in lines


def test_discover_json_and_unused_additional_info(tmp_path: Path) -> None:
    upstream_node(tmp_path / "sys")
    doc = {"resourceList": [
        {"resourceName": "sf", "deviceType": "auxNetDevice",
         "selectors": [{"rootDevices": ["0000:03:00.1"], "isRdma": True}],
         "additionalInfo": {"*": {"a": "b"}, "mlx5_core.sf.9": {"x": "y"}}},
        {"resourceName": "ib", "selectors": [
            {"linkTypes": ["infiniband"], "isRdma": True, "pKeys": ["0x7fff"]}]},
    ]}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(doc))
    out = invoke("discover", "--json", "--config-file", str(tmp_path / "c.json"),
                 "--sysfs-root", str(tmp_path / "sys"), "--proc-root", str(tmp_path))  # fmt: skip
    got = json.loads(out.stdout)
    sf, ib = got["pools"]
    assert sf["notes"] == ["additionalInfo 'mlx5_core.sf.9' matches no device of this pool"]
    assert sf["devices"] == [{
        "id": "mlx5_core.sf.5", "vendor": "15b3", "device": "a2d6", "driver": "mlx5_core.sf",
        "pf": "0000:03:00.1", "pfName": "p1", "vfIndex": None, "netdev": "en3f1pf1sf2",
        "linkType": "ether", "numaNode": 0, "iommuGroup": None,
        "healthLink": "p1", "healthLinkState": "up", "rdmaDevices": ["mlx5_sf2"],
        "auxType": "sf", "sfIndex": 2, "extra": {"a": "b"},
    }]  # fmt: skip
    assert [d["id"] for d in ib["devices"]] == ["0000:3c:00.2"]
    assert "notes" not in ib
    assert {e["id"]: e["reason"] for e in ib["excluded"]}["0000:3c:00.0"] == (
        "default pkey 0x8001 not in pKeys"
    )
