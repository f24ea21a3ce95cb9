"""GetPreferredAllocation policies on hand-built devices (sriovdp.workers.plugin.preferred), and
the servicer's answers as the pool's devices and health change (the layout is per device list)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from sriovdp.proto import api_pb2
from sriovdp.shared.messages import LinkState
from sriovdp.shared.model import AllocationPolicy, PoolDevice
from sriovdp.workers.plugin.allocation import AllocationTable
from sriovdp.workers.plugin.devinfo import DevInfoWriter
from sriovdp.workers.plugin.drivers import DriverContext
from sriovdp.workers.plugin.preferred import PoolLayout, choose, preferred
from sriovdp.workers.plugin.servicer import DevicePluginServicer
from sriovdp.workers.plugin.state import PoolState
from tests.workers.plugin.factories import pool, vf

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
    layout = PoolLayout(three_pfs)
    unhashable: list[str] = [[]]  # type: ignore[list-item]
    assert preferred(PACKED, layout, unhashable, [], 2) == []
    assert preferred(PACKED, layout, list(three_pfs), [], None) == []  # type: ignore[arg-type]
    assert len(preferred(PACKED, layout, list(three_pfs), [], 2)) == 2


def test_balanced_takes_more_than_one_round(three_pfs: dict[str, PoolDevice]) -> None:
    got = choose(BALANCED, three_pfs, list(three_pfs), [], 8)
    # one each per round while a PF has free VFs; PF1 (2 VFs) runs out in round 2
    assert ids_of_pf(three_pfs, got).count("0000:01:00.0") == 2
    assert len(set(got)) == 8 and vf(0, 0).id in got


def test_vf_order_whether_few_or_most_ids_are_offered() -> None:
    """Few offered ids (put in their groups) or most (the others skipped): same VF order."""
    devices = table(*(vf(0, i) for i in range(8)), *(vf(1, i) for i in range(8)))
    few = [vf(0, i).id for i in (6, 2, 4)] + [vf(1, i).id for i in (7, 5, 1, 3)]
    assert choose(PACKED, devices, few, [], 2) == [vf(0, 2).id, vf(0, 4).id]
    assert choose(BALANCED, devices, few, [], 3) == [vf(1, 1).id, vf(0, 2).id, vf(1, 3).id]
    most = [d for d in reversed(devices) if d not in (vf(0, 0).id, vf(0, 3).id)]
    assert choose(PACKED, devices, most, [], 3) == [vf(0, i).id for i in (1, 2, 4)]
    assert choose(BALANCED, devices, most, [vf(1, 5).id], 3) == [
        vf(1, 5).id,
        vf(0, 1).id,
        vf(1, 0).id,
    ]


# --- through the servicer: the layout follows the pool's device list ---


class Pool:
    """A PoolState (packed) and its servicer, GetPreferredAllocation called on the handler."""

    def __init__(self, devices: Iterable[PoolDevice], tmp_path: Path) -> None:
        p = pool()

        def build(devs: Iterable[PoolDevice]) -> AllocationTable:
            return AllocationTable(p, devs, DriverContext(Path("/nonexistent")))

        self.state = PoolState(p, devices, build)
        self.servicer = DevicePluginServicer(self.state, DevInfoWriter(tmp_path / "devinfo"))

    def ask(self, available: list[str], must: list[str], size: int) -> list[str]:
        creq = api_pb2.ContainerPreferredAllocationRequest(
            available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size
        )
        request = api_pb2.PreferredAllocationRequest(container_requests=[creq, creq])
        resp = asyncio.run(self.servicer.GetPreferredAllocation(request, None))
        first, second = (list(c.deviceIDs) for c in resp.container_responses)
        assert first == second  # each container is answered on its own
        return first


def test_rescan_replaces_the_layout(tmp_path: Path) -> None:
    pf0 = [vf(0, i) for i in range(2)]
    pf1 = [vf(1, i) for i in range(4)]
    pf2 = [vf(2, i) for i in range(3)]
    served = Pool([*pf0, *pf1], tmp_path)
    offered = [d.id for d in pf0 + pf1 + pf2]  # a kubelet that still offers what it knew
    assert served.ask(offered, [], 2) == [d.id for d in pf0]
    before = served.state.view.layout
    assert served.state.replace_devices([*pf1, *pf2])  # PF0 gone, PF2 (3 VFs) new
    assert served.state.view.layout is not before
    # a stale layout would still pick PF0's VFs (and not know PF2's)
    assert served.ask(offered, [], 2) == [d.id for d in pf2[:2]]
    assert served.ask(offered, [pf0[0].id], 2) == []  # a must-include id the pool lost
    assert served.state.replace_devices([*pf0, *pf1])  # and back
    assert served.ask(offered, [], 2) == [d.id for d in pf0]


def test_health_change_keeps_the_layout(tmp_path: Path) -> None:
    pf0 = [vf(0, i) for i in range(2)]
    pf1 = [vf(1, i) for i in range(4)]
    served = Pool([*pf0, *pf1], tmp_path)
    ids = [d.id for d in pf0 + pf1]
    before = served.state.view
    down = LinkState("pf0", 3, "DOWN", False, True)
    assert served.state.apply_link(down).health_changed
    assert served.state.view.version != before.version
    assert served.state.view.layout is before.layout  # same devices: nothing to rebuild
    # the kubelet offers only healthy ids: what it offers decides, as before the change
    assert served.ask([d.id for d in pf1], [], 2) == [d.id for d in pf1[:2]]
    assert served.ask(ids, [], 2) == [d.id for d in pf0]
