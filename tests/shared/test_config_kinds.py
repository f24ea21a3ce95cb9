"""Config fields of the current upstream plugin: auxNetDevice and auxTypes, vdpaType,
ddpProfiles, pKeys, additionalInfo keyed by device id, and the upstream README's example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sriovdp.shared.config import ConfigError, parse_config
from sriovdp.shared.model import DeviceType, Selector, VdpaType, VfFilter
from sriovdp.simnode import upstream_readme_config

GOOD = Path(__file__).resolve().parents[1] / "configs" / "good"


def test_the_upstream_readme_example_parses_field_by_field() -> None:
    doc = json.loads((GOOD / "upstream_readme.json").read_text())
    assert doc == upstream_readme_config()
    cfg = parse_config(json.dumps(doc), "c.json", "intel.com")
    pools = {p.resource: p for p in cfg.pools}
    intel = Selector(vendors=("8086",), devices=("154c", "10ed", "1889"),
                     drivers=("i40evf", "ixgbevf", "iavf"))  # fmt: skip
    assert pools["intel.com/intel_sriov_netdevice"].selectors == (intel,)
    assert pools["intel.com/old_selectors_syntax_example"].selectors == (intel,)
    (dpdk,) = pools["intel.com/intel_sriov_dpdk"].selectors
    assert dpdk.pf_names == (VfFilter("enp0s0f0"), VfFilter("enp2s2f1"))
    assert dpdk.need_vhost_net and dpdk.drivers == ("vfio-pci",)
    (rdma,) = pools["mellanox.com/mlnx_sriov_rdma"].selectors
    assert rdma.is_rdma is True and rdma.drivers == ("mlx5_ib",)
    (ib,) = pools["intel.com/infiniband_rdma_netdevs"].selectors
    assert (ib.link_types, ib.is_rdma) == (("infiniband",), True)
    (vdpa,) = pools["intel.com/ct6dx_vdpa_vhost"].selectors
    assert vdpa.vdpa_type is VdpaType.VHOST
    assert pools["intel.com/intel_fpga"].device_type is DeviceType.ACCELERATOR
    sf = pools["nvidia.com/bf2_sf"]
    assert sf.device_type is DeviceType.AUX_NET_DEVICE and sf.is_aux
    assert sf.selectors == (
        Selector(vendors=("15b3",), devices=("a2d6",), aux_types=("sf",),
                 pf_names=(VfFilter("p0", frozenset(range(1, 6))),)),
    )  # fmt: skip
    extra = pools["intel.com/intel_sriov_netdevice_additional_env"]
    assert extra.extra_info("0000:19:00.0") == {"token": "3e49019f-412f-4f02-824e-4cd195944205"}
    assert pools["broadcom.com/brcm_sriov_bnxt"].resource_prefix == "broadcom.com"


def test_the_readme_text_as_upstream_prints_it_is_not_json() -> None:
    """Upstream's README has a comma after the brcm_sriov_bnxt selectors; no JSON parser takes
    it (upstream's Go one neither): the error names the place."""
    good = json.dumps(upstream_readme_config(), indent=1)
    text = good.replace('"bnxt_en"\n     ]\n    }\n   ]', '"bnxt_en"\n     ]\n    }\n   ],')
    assert text != good
    with pytest.raises(ConfigError) as err:
        parse_config(text, "readme.json", "intel.com")
    (line,) = err.value.errors
    assert line.startswith("readme.json: line ") and "invalid JSON" in line


@pytest.mark.parametrize(
    ("given", "value"),
    [("0x8001", 0x8001), ("0X7FFF", 0x7FFF), ("abcd", 0xABCD), ("1", 1), ("0xffff", 0xFFFF)],
)
def test_pkeys_in_any_spelling(given: str, value: int) -> None:
    doc = {"resourceList": [{"resourceName": "ib", "selectors": [
        {"linkTypes": ["infiniband"], "pKeys": [given]}]}]}  # fmt: skip
    (pool,) = parse_config(json.dumps(doc), "c.json", "intel.com").pools
    assert pool.selectors[0].pkeys == (value,)


def test_additional_info_takes_auxiliary_device_names() -> None:
    info = {"mlx5_core.sf.4": {"k": "v"}, "*": {"a": "b"}}
    entry = {"resourceName": "sf", "deviceType": "auxNetDevice",
             "selectors": [{"auxTypes": ["sf"]}], "additionalInfo": info}  # fmt: skip
    doc = {"resourceList": [entry]}
    (pool,) = parse_config(json.dumps(doc), "c.json", "intel.com").pools
    assert pool.extra_info("mlx5_core.sf.4") == {"a": "b", "k": "v"}
    assert pool.extra_info("mlx5_core.sf.5") == {"a": "b"}


def test_every_problem_of_the_new_fields_at_once() -> None:
    doc = {"resourceList": [
        {"resourceName": "a", "deviceType": "auxNetDevice",
         "selectors": [{"auxTypes": ["sf"], "pKeys": ["1"], "isRdma": True}]},
        {"resourceName": "b", "selectors": [{"vdpaType": "vhost", "isRdma": True,
                                              "pKeys": ["0x1"], "auxTypes": ["sf"]}]},
    ]}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_config(json.dumps(doc), "c.json", "intel.com")
    assert err.value.errors == [
        'c.json: resourceList[0].selectors[0].pKeys: ["1"]: not applicable to deviceType '
        '"auxNetDevice"',
        'c.json: resourceList[1].selectors[0].auxTypes: ["sf"]: not applicable to deviceType '
        '"netDevice" (only for deviceType "auxNetDevice")',
        'c.json: resourceList[1].selectors[0].pKeys: ["0x1"]: only valid with linkTypes: '
        '["infiniband"] in the same selector',
        'c.json: resourceList[1].selectors[0].vdpaType: "vhost": cannot be combined with '
        "isRdma: true (a vDPA device has no RDMA device)",
    ]
