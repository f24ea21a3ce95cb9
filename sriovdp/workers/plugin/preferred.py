"""GetPreferredAllocation policies: packed, balanced, none (plugin worker process, called by the
handler on ``grpc-loop``).

Pure functions over the pool's devices. Rules for every policy: the must-include ids come first
and are always kept (a must-include id this pool does not know, or that is not among ``available``,
makes the answer empty); the rest is chosen only from ``available`` ids this pool knows; the answer
has exactly ``size`` ids, or is empty when that is impossible (an empty answer is always safe for
the kubelet, an error would reject the pod). Candidates on the NUMA node(s) of the must-include
devices are preferred. ``packed`` fills the PF with the fewest free devices first (whole PFs stay
free), ``balanced`` spreads the request across PFs. :func:`preferred` never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sriovdp.shared.model import AllocationPolicy, PoolDevice

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Group:
    """Free candidates that share a PF (or a non-VF function on its own)."""

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
    """0: on a must-include NUMA node (or no NUMA preference), 1: elsewhere."""
    return 0 if not numas or group.numa in numas else 1


def _packed(groups: list[_Group], numas: set[int], need: int) -> list[str]:
    # the PF that already holds must-include devices first, then the fullest (fewest free)
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


def choose(
    policy: AllocationPolicy,
    devices: Mapping[str, PoolDevice],
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
) -> list[str]:
    """The preferred ids for one container (may raise on bad input; see :func:`preferred`)."""
    if policy is AllocationPolicy.NONE or size <= 0:
        return []
    must = list(dict.fromkeys(must_include))
    if len(must) > size:
        return []
    offered = set(available)
    if any(i not in devices or i not in offered for i in must):
        return []  # a must-include id of another pool, or not offered: cannot be honoured
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


def preferred(
    policy: AllocationPolicy,
    devices: Mapping[str, PoolDevice],
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
) -> list[str]:
    """Like :func:`choose`, but logs and returns an empty answer on any internal problem."""
    try:
        return choose(policy, devices, available, must_include, size)
    except Exception:
        log.exception("preferred allocation failed; answering with no preference")
        return []
