"""sriovdp.shared.config: both formats, every validation error, the bad-config corpus, fuzzing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sriovdp import simnode
from sriovdp.shared.config import (
    ConfigError,
    config_warnings,
    load_config,
    normalize_pci_address,
    parse_config,
    parse_vf_filter,
)
from sriovdp.shared.model import (
    AllocationPolicy,
    DeviceType,
    LegacyDriverKind,
    NodeConfig,
    Selector,
    VfFilter,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BAD = CONFIGS / "bad"
GOOD = CONFIGS / "good"
EXPECTED: dict[str, list[str]] = json.loads((BAD / "expected.json").read_text())
BAD_FILES = sorted(p.name for p in BAD.glob("*.json") if p.name != "expected.json")


def parse(doc: Any, prefix: str = "intel.com") -> NodeConfig:
    return parse_config(json.dumps(doc), "c.json", prefix)


def errors(doc: Any, prefix: str = "intel.com") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(doc, prefix)
    return info.value.errors


def one(**entry: Any) -> dict[str, Any]:
    return {"resourceList": [{"resourceName": "net_a", **entry}]}


# -- the corpus --------------------------------------------------------------------------------


def test_corpus_is_complete() -> None:
    assert len(BAD_FILES) >= 30
    assert sorted(EXPECTED) == BAD_FILES


def _expected(name: str) -> list[str]:
    """The corpus's messages; for a JSON syntax error, where and what the running Python's json
    module says (3.13 words some errors differently and points elsewhere), in our format."""
    if not name.startswith("syntax_"):
        return EXPECTED[name]
    try:
        json.loads((BAD / name).read_text())
    except json.JSONDecodeError as exc:
        return [f"{name}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]
    raise AssertionError(f"{name} is valid JSON")


def test_the_syntax_messages_are_those_of_python_3_11() -> None:
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the corpus records Python 3.11's json messages")
    for name in (n for n in BAD_FILES if n.startswith("syntax_")):
        assert _expected(name) == EXPECTED[name]


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_config_gives_exactly_the_expected_messages(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config((BAD / name).read_text(), name, "intel.com")
    assert info.value.errors == _expected(name)
    assert str(info.value) == "\n".join(_expected(name))
    for message in info.value.errors:
        assert message.startswith(f"{name}: ")


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.json")), ids=lambda p: p.name)
def test_good_configs_load(path: Path) -> None:
    config = load_config(path, "intel.com")
    assert config.path == str(path)
    assert [p.index for p in config.pools] == list(range(len(config.pools)))


# -- legacy format -------------------------------------------------------------------------------


def test_seed_readme_example_translates_to_root_device_selectors() -> None:
    config = load_config(GOOD / "seed_readme.json", "intel.com")
    a, b = config.pools
    assert a.resource == "intel.com/sriov_net_A"
    assert a.device_type is None
    assert a.legacy_driver is LegacyDriverKind.NETDEVICE
    assert a.selectors == (
        Selector(root_devices=(VfFilter("0000:02:00.0"), VfFilter("0000:02:00.2"))),
    )
    assert b.legacy_driver is LegacyDriverKind.VFIO
    assert b.index == 1


def test_legacy_without_sriov_mode_means_the_root_devices_themselves() -> None:
    config = parse({"resourceList": [{"resourceName": "pfs", "rootDevices": ["3b:00.0"]}]})
    (pool,) = config.pools
    assert pool.selectors == (Selector(pci_addresses=("0000:3b:00.0",)),)
    assert pool.legacy_driver is LegacyDriverKind.NETDEVICE  # the default deviceType


def test_legacy_uio_and_pool_level_options() -> None:
    doc = {
        "resourceList": [
            {
                "resourceName": "u",
                "rootDevices": ["0000:3B:00.1"],
                "sriovMode": True,
                "deviceType": "uio",
                "resourcePrefix": "example.com",
                "allocationPolicy": "none",
            }
        ]
    }
    (pool,) = parse(doc).pools
    assert pool.legacy_driver is LegacyDriverKind.UIO
    assert pool.resource == "example.com/u"
    assert pool.allocation_policy is AllocationPolicy.NONE
    assert pool.selectors[0].root_devices == (VfFilter("0000:3b:00.1"),)


# -- selector format ------------------------------------------------------------------------------


def test_selector_object_and_every_field() -> None:
    (pool,) = load_config(GOOD / "selectors_full.json", "intel.com").pools[:1]
    assert pool.resource == "example.com/intel_sriov_netdevice"
    assert pool.device_type is DeviceType.NET_DEVICE
    assert pool.legacy_driver is None
    assert pool.exclude_topology is True
    assert pool.allocation_policy is AllocationPolicy.BALANCED
    (sel,) = pool.selectors
    assert sel.vendors == ("8086",)
    assert sel.devices == ("154c", "10ed")
    assert sel.drivers == ("iavf", "ixgbevf")
    assert sel.pf_names == (
        VfFilter("ens1f0", frozenset({0, 3, 4, 5})),
        VfFilter("ens1f1", None),
    )
    assert sel.link_types == ("ether",)
    assert sel.is_rdma is None
    assert pool.extra_info("0000:04:00.1") == {"team": "storage", "zone": "a"}
    assert pool.extra_info("0000:04:00.2") == {"team": "net"}


def test_selector_list_rdma_vhost_accelerator_and_empty_fields() -> None:
    config = load_config(GOOD / "selectors_full.json", "intel.com")
    rdma, fpga, pinned = config.pools[1:]
    assert rdma.resource == "intel.com/mlnx_rdma"
    first, second = rdma.selectors
    assert first.is_rdma is True
    assert first.link_types == ("infiniband",)
    assert second.root_devices == (VfFilter("0000:86:00.0", frozenset(range(4))),)
    assert second.need_vhost_net is True
    assert second.is_rdma is None
    assert fpga.device_type is DeviceType.ACCELERATOR
    assert fpga.selectors[0].acpi_indexes == ("101",)
    assert fpga.allocation_policy is AllocationPolicy.NONE
    # an empty field list is not applied; short addresses get domain 0000
    assert pinned.selectors == (Selector(pci_addresses=("0000:05:00.0", "0000:05:00.1")),)


def test_is_rdma_false_is_kept_apart_from_absent() -> None:
    (pool,) = parse(one(selectors={"isRdma": False})).pools
    assert pool.selectors[0].is_rdma is False


def test_formats_mix_per_entry_and_keep_file_order() -> None:
    config = load_config(GOOD / "mixed_formats.json", "intel.com")
    assert [p.resource_name for p in config.pools] == ["legacy_pfs", "legacy_uio", "new_vfio"]
    assert [p.legacy_driver for p in config.pools] == [
        LegacyDriverKind.NETDEVICE,
        LegacyDriverKind.UIO,
        None,
    ]
    assert config.pools[2].device_type is DeviceType.NET_DEVICE


def test_default_prefix_is_used_and_validated() -> None:
    assert parse(one(selectors={}), prefix="example.org").pools[0].resource == "example.org/net_a"
    assert errors(one(selectors={}), prefix="Bad/Prefix") == [
        "c.json: resourceList[0]: --resource-prefix 'Bad/Prefix' must not contain '/'"
    ]
    # a bad CLI prefix does not matter when every pool sets its own
    parse(one(selectors={}, resourcePrefix="example.com"), prefix="Bad/Prefix")


def test_demo_config_is_valid() -> None:
    config = parse(simnode.demo_config())
    assert [p.resource_name for p in config.pools] == ["sriov_net_A", "sriov_vfio", "sriov_uio"]


def test_empty_resource_list_is_valid_with_a_warning() -> None:
    config = parse({"resourceList": []})
    assert config.pools == ()
    assert config_warnings(config) == ["c.json: resourceList is empty: no pools will be advertised"]
    assert config_warnings(parse(simnode.demo_config())) == []


# -- pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("02:00.0", "0000:02:00.0"),
        ("0000:3B:1F.7", "0000:3b:1f.7"),
        ("10000:00:02.0", "10000:00:02.0"),  # VMD domains are wider than 4 digits
        ("02:00", None),
        ("02:20.0", None),  # slot is 5 bits
        ("02:00.8", None),  # function is 3 bits
        ("000:02:00.0", None),
        ("gg:00.0", None),
        ("", None),
    ],
)
def test_normalize_pci_address(text: str, expected: str | None) -> None:
    assert normalize_pci_address(text) == expected


@pytest.mark.parametrize(
    ("text", "pf", "indexes"),
    [
        ("ens1f0", "ens1f0", None),
        ("ens1f0#0", "ens1f0", {0}),
        ("ens1f0#0,3-5", "ens1f0", {0, 3, 4, 5}),
        ("ens1f0#2-2,1", "ens1f0", {1, 2}),
        ("ens1f0# 1 , 2", "ens1f0", {1, 2}),
        ("02:00.0#7", "0000:02:00.0", {7}),
    ],
)
def test_vf_filter_ranges(text: str, pf: str, indexes: set[int] | None) -> None:
    flt, problem = parse_vf_filter(text, need_address=False)
    assert problem is None
    assert flt == VfFilter(pf, None if indexes is None else frozenset(indexes))


def test_root_devices_need_an_address() -> None:
    assert parse_vf_filter("ens1f0", need_address=True)[0] is None
    assert parse_vf_filter("0000:02:00.0#1", need_address=True)[0] == VfFilter(
        "0000:02:00.0", frozenset({1})
    )


# -- files -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(path, "intel.com")
    assert info.value.errors == [f"{path}: cannot read: No such file or directory"]


def test_directory_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: Is a directory"):
        load_config(tmp_path, "intel.com")
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"resourceList": ["\xe9"]}')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 19\)"):
        load_config(bad, "intel.com")


def test_deep_nesting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config("[" * 100_000 + "]" * 100_000, "c.json", "intel.com")


def test_config_error_is_a_value_error_listing_all() -> None:
    exc = ConfigError(["a", "b"])
    assert isinstance(exc, ValueError)
    assert str(exc) == "a\nb"


# -- fuzzing: parse_config returns a NodeConfig or raises ConfigError, nothing else ----------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["resourceList", "resourceName", "selectors", "pfNames", "x"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def _check(text: str) -> None:
    try:
        result = parse_config(text, "f.json", "intel.com")
    except ConfigError as exc:
        assert exc.errors
        assert all(isinstance(e, str) and e.startswith("f.json: ") for e in exc.errors)
    else:
        assert isinstance(result, NodeConfig)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json)
def test_random_json_never_crashes(doc: Any) -> None:
    _check(json.dumps(doc))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_random_text_never_crashes(text: str) -> None:
    _check(text)


_VALID_DOCS = [json.loads(p.read_text()) for p in sorted(GOOD.glob("*.json"))]
_LEAVES = st.none() | st.booleans() | st.integers(-3, 70000) | st.text(max_size=10) | _json
_MUTATION_VALUES = _LEAVES | st.sampled_from(
    ["02:00.0", "ens1f0#1-0", "#", "0000:02:00.0#", "vfio", "netDevice", "packed", "8086", []]
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    doc = json.loads(json.dumps(draw(st.sampled_from(_VALID_DOCS))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(_MUTATION_VALUES)
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_valid_configs_never_crash(doc: Any) -> None:
    _check(json.dumps(doc))
