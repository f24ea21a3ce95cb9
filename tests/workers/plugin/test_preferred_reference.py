"""GetPreferredAllocation against the straightforward implementation it replaced
(sriovdp.workers.plugin.preferred): on random pools and requests, :class:`PoolLayout` answers
exactly what sorting and grouping every candidate on every call answered, for every policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sriovdp.shared.model import AllocationPolicy, PciFunction, PoolDevice
from sriovdp.workers.plugin.preferred import PoolLayout, choose
from tests.workers.plugin.factories import vf

# --- the implementation before PoolLayout (commit b207315), kept verbatim as the oracle ---


@dataclass(slots=True)
class _Group:
    key: str
    numa: int | None
    free: list[str]
    taken: int = 0


def _group_key(device: PoolDevice) -> str:
    return device.function.pf_address or device.id


def _order_key(device: PoolDevice) -> tuple[int, str]:
    index = device.function.vf_index
    return (index if index is not None else 1 << 30, device.id)


def _groups(
    candidates: Sequence[PoolDevice], must: Sequence[PoolDevice]
) -> tuple[list[_Group], set[int]]:
    groups: dict[str, _Group] = {}
    for device in sorted(candidates, key=_order_key):
        key = _group_key(device)
        group = groups.setdefault(key, _Group(key, device.function.numa_node, []))
        group.free.append(device.id)
    for device in must:
        key = _group_key(device)
        if key in groups:
            groups[key].taken += 1
    numas = {d.function.numa_node for d in must if d.function.numa_node is not None}
    return list(groups.values()), numas


def _tier(group: _Group, numas: set[int]) -> int:
    return 0 if not numas or group.numa in numas else 1


def _packed(groups: list[_Group], numas: set[int], need: int) -> list[str]:
    groups.sort(key=lambda g: (_tier(g, numas), -g.taken, len(g.free), g.key))
    out: list[str] = []
    for group in groups:
        take = group.free[: need - len(out)]
        out.extend(take)
        if len(out) == need:
            break
    return out


def _balanced(groups: list[_Group], numas: set[int], need: int) -> list[str]:
    out: list[str] = []
    while len(out) < need:
        live = [g for g in groups if g.free]
        if not live:
            break
        group = min(live, key=lambda g: (_tier(g, numas), g.taken, -len(g.free), g.key))
        out.append(group.free.pop(0))
        group.taken += 1
    return out


def reference(
    policy: AllocationPolicy,
    devices: Mapping[str, PoolDevice],
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
) -> list[str]:
    if policy is AllocationPolicy.NONE or size <= 0:
        return []
    must = list(dict.fromkeys(must_include))
    if len(must) > size:
        return []
    offered = set(available)
    if any(i not in devices or i not in offered for i in must):
        return []
    if len(must) == size:
        return must
    must_set = set(must)
    must_devices = [devices[i] for i in must if i in devices]
    candidates = [
        devices[i] for i in dict.fromkeys(available) if i in devices and i not in must_set
    ]
    need = size - len(must)
    if len(candidates) < need:
        return []
    groups, numas = _groups(candidates, must_devices)
    pick = (
        _packed(groups, numas, need)
        if policy is AllocationPolicy.PACKED
        else (_balanced(groups, numas, need))
    )
    if len(pick) != need:
        return []
    return must + pick


# --- random pools and requests ---

NUMAS = st.sampled_from([None, 0, 1])
#: addresses for functions that are not VFs; the first two are PF addresses of ``vf()`` devices,
#: so such a function shares its group with that PF's VFs
PLAIN_ADDRESSES = ["0000:00:00.0", "0000:01:00.0", "0000:30:00.0", "0000:31:00.0", "0000:32:00.0"]


def plain(address: str, numa: int | None) -> PoolDevice:
    fn = PciFunction(address, "8086", "10d3", 0x020000, "e1000e", numa, None)
    return PoolDevice(fn)


@st.composite
def pools(draw: st.DrawFn) -> dict[str, PoolDevice]:
    devices: list[PoolDevice] = []
    for pf in range(draw(st.integers(1, 4))):
        numa = draw(NUMAS)
        mixed = draw(st.integers(0, 3)) == 0  # VFs of one PF on several nodes: never real
        indexes = draw(st.sets(st.integers(0, 15), min_size=1, max_size=8))
        for index in indexes:
            devices.append(vf(pf, index, numa=draw(NUMAS) if mixed else numa))
    for address in draw(st.sets(st.sampled_from(PLAIN_ADDRESSES), max_size=3)):
        devices.append(plain(address, draw(NUMAS)))
    return {d.id: d for d in devices}


UNKNOWN = ["0000:99:00.0", "0000:99:00.1"]


@st.composite
def requests(
    draw: st.DrawFn,
) -> tuple[AllocationPolicy, dict[str, PoolDevice], list[str], list[str], int]:
    """Mostly answerable requests (known offered ids, a size they can fill), with duplicates,
    unknown ids and must-include ids that cannot be honoured now and then."""
    devices = draw(pools())
    known = sorted(devices)
    offered = draw(st.lists(st.sampled_from(known), unique=True, min_size=1))
    extra = draw(st.lists(st.sampled_from(offered + UNKNOWN), max_size=3))
    available = draw(st.permutations(offered + extra))
    if draw(st.integers(0, 4)) == 0:
        must = draw(st.lists(st.sampled_from(known + UNKNOWN), max_size=3))
    else:
        must = draw(st.lists(st.sampled_from(offered), max_size=3))
    if draw(st.integers(0, 4)) == 0:
        size = draw(st.integers(-1, len(offered) + 2))
    else:
        size = draw(st.integers(1, len(offered)))
    policy = draw(
        st.sampled_from(
            [AllocationPolicy.PACKED, AllocationPolicy.BALANCED] * 3 + [AllocationPolicy.NONE]
        )
    )
    return policy, devices, available, must, size


@settings(max_examples=600, deadline=None)
@given(requests())
@example(  # a PF whose unoffered first VF is on another NUMA node than the rest (mixed group)
    (
        AllocationPolicy.PACKED,
        {
            d.id: d
            for d in [
                vf(0, 0, numa=1),
                *(vf(0, i, numa=0) for i in (1, 2)),
                vf(1, 0),
                vf(2, 0, numa=1),
            ]
        },
        [vf(0, 1).id, vf(0, 2).id, vf(1, 0).id, vf(2, 0).id],
        [vf(1, 0).id],
        2,
    )
)
def test_same_answers_as_the_reference(
    case: tuple[AllocationPolicy, dict[str, PoolDevice], list[str], list[str], int],
) -> None:
    policy, devices, available, must, size = case
    expected = reference(policy, devices, available, must, size)
    assert choose(policy, devices, available, must, size) == expected


@settings(max_examples=100, deadline=None)
@given(pools(), st.data())
def test_one_layout_answers_many_requests(
    devices: dict[str, PoolDevice], data: st.DataObject
) -> None:
    """A layout holds nothing of a request: one layout, many requests, each as the reference."""
    layout = PoolLayout(devices)
    known = sorted(devices)
    for _ in range(5):
        available = data.draw(st.lists(st.sampled_from(known), unique=True)) if known else []
        must = data.draw(st.lists(st.sampled_from(available), max_size=2)) if available else []
        size = data.draw(st.integers(0, len(available) + 1))
        for policy in AllocationPolicy:
            expected = reference(policy, devices, available, must, size)
            assert layout.choose(policy, available, must, size) == expected
