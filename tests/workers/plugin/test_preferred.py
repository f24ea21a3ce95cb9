"""GetPreferredAllocation policies on hand-built devices (sriovdp.workers.plugin.preferred)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from sriovdp.shared.model import AllocationPolicy, PoolDevice
from sriovdp.workers.plugin.preferred import choose, preferred
from tests.workers.plugin.factories import vf

PACKED = AllocationPolicy.PACKED
BALANCED = AllocationPolicy.BALANCED


def table(*devices: PoolDevice) -> dict[str, PoolDevice]:
    return {d.id: d for d in devices}


@pytest.fixture
def three_pfs() -> dict[str, PoolDevice]:
    """PF0 (NUMA 0): 4 VFs, PF1 (NUMA 0): 2 VFs, PF2 (NUMA 1): 3 VFs."""
    return table(
        *(vf(0, i, numa=0) for i in range(4)),
        *(vf(1, i, numa=0) for i in range(2)),
        *(vf(2, i, numa=1) for i in range(3)),
    )


def ids_of_pf(devices: Mapping[str, PoolDevice], ids: list[str]) -> list[str]:
    return [devices[i].function.pf_address or "" for i in ids]


def test_packed_fills_the_pf_with_fewest_free_first(three_pfs: dict[str, PoolDevice]) -> None:
    got = choose(PACKED, three_pfs, list(three_pfs), [], 3)
    assert len(got) == 3
    # PF1 has 2 free: taken whole, then the next fullest (PF2, 3 free) before PF0 (4 free)
    assert ids_of_pf(three_pfs, got) == ["0000:01:00.0", "0000:01:00.0", "0000:02:00.0"]


def test_balanced_spreads_across_pfs(three_pfs: dict[str, PoolDevice]) -> None:
    got = choose(BALANCED, three_pfs, list(three_pfs), [], 3)
    assert sorted(ids_of_pf(three_pfs, got)) == ["0000:00:00.0", "0000:01:00.0", "0000:02:00.0"]


def test_must_include_kept_and_its_numa_preferred(three_pfs: dict[str, PoolDevice]) -> None:
    must = vf(2, 0).id  # on NUMA 1
    for policy in (PACKED, BALANCED):
        got = choose(policy, three_pfs, list(three_pfs), [must], 3)
        assert got[0] == must
        assert len(got) == 3 and len(set(got)) == 3
        assert {three_pfs[i].function.numa_node for i in got} == {1}


def test_packed_with_must_include_fills_its_pf_first(three_pfs: dict[str, PoolDevice]) -> None:
    must = vf(0, 3).id
    got = choose(PACKED, three_pfs, list(three_pfs), [must], 3)
    assert ids_of_pf(three_pfs, got) == ["0000:00:00.0"] * 3


def test_balanced_counts_must_include_as_taken(three_pfs: dict[str, PoolDevice]) -> None:
    must = vf(0, 0).id
    got = choose(BALANCED, three_pfs, list(three_pfs), [must], 2)
    # NUMA 0 preferred; PF0 already has one: the second comes from PF1
    assert ids_of_pf(three_pfs, got) == ["0000:00:00.0", "0000:01:00.0"]


def test_numa_falls_back_to_other_nodes_when_short(three_pfs: dict[str, PoolDevice]) -> None:
    must = vf(2, 0).id
    got = choose(PACKED, three_pfs, list(three_pfs), [must], 5)
    assert len(got) == 5
    assert [three_pfs[i].function.numa_node for i in got[:3]] == [1, 1, 1]


def test_chooses_only_from_available_and_exact_size(three_pfs: dict[str, PoolDevice]) -> None:
    available = [vf(0, 1).id, vf(2, 2).id, "0000:99:00.0"]  # one unknown to the pool
    assert sorted(choose(PACKED, three_pfs, available, [], 2)) == sorted(available[:2])
    assert choose(PACKED, three_pfs, available, [], 3) == []  # not enough known candidates


def test_none_policy_and_degenerate_sizes(three_pfs: dict[str, PoolDevice]) -> None:
    ids = list(three_pfs)
    assert choose(AllocationPolicy.NONE, three_pfs, ids, [], 2) == []
    assert choose(PACKED, three_pfs, ids, [], 0) == []
    assert choose(PACKED, three_pfs, ids, [], -3) == []
    assert choose(PACKED, three_pfs, ids, ids[:3], 2) == []  # more must-include than size
    assert choose(PACKED, three_pfs, ids, ids[:2], 2) == ids[:2]
    doubled = choose(PACKED, three_pfs, ids + ids, [], 9)  # duplicates in available
    assert len(doubled) == 9 and set(doubled) == set(ids)


def test_preferred_never_raises(three_pfs: dict[str, PoolDevice]) -> None:
    broken: dict[str, PoolDevice] = dict(three_pfs)
    broken[vf(0, 0).id] = None  # type: ignore[assignment]
    assert preferred(PACKED, broken, list(broken), [], 2) == []
