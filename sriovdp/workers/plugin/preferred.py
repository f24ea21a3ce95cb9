"""GetPreferredAllocation policies: packed, balanced, none (plugin worker process; a
:class:`PoolLayout` is built with each new device list by whoever builds the pool's view, and
:func:`preferred` is called by the handler on ``grpc-loop``).

Rules for every policy: the must-include ids come first and are always kept (a must-include id
this pool does not know, or that is not among ``available``, makes the answer empty); the rest is
chosen only from ``available`` ids this pool knows; the answer has exactly ``size`` ids, or is
empty when that is impossible (an empty answer is always safe for the kubelet, an error would
reject the pod). Candidates on the NUMA node(s) of the must-include devices are preferred.
``packed`` fills the PF with the fewest free devices first (whole PFs stay free), ``balanced``
spreads the request across PFs. Health plays no part: the kubelet offers only healthy ids.
:func:`preferred` never raises.

Devices are grouped by PF address (a function that is not a VF by its own address), each group
in VF order (``vf_index``, then id). A group's NUMA node is that of its first free candidate.

Cost: everything that depends only on the device list (the groups, their order, each id's group
and NUMA node) is in :class:`PoolLayout`, built once per device list. A call reads ``available``
once into a set (the kubelet sends every free id: thousands), counts per group whichever side is
smaller (the known ids not offered, or the offered ones), then works per group (ranking them) and
per chosen id (walking a group's VFs in order), never sorting or rebuilding the whole pool.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from sriovdp.shared.model import AllocationPolicy, PoolDevice

log = logging.getLogger(__name__)


def _group_key(device: PoolDevice) -> str:
    return device.function.pf_address or device.id


def _order_key(device: PoolDevice) -> tuple[int, str]:
    index = device.function.vf_index
    return (index if index is not None else 1 << 30, device.id)


@dataclass(frozen=True, slots=True)
class _Group:
    """The devices that share a PF (or a non-VF function on its own), in VF order."""

    key: str
    ids: tuple[str, ...]
    #: the first member's NUMA node: the group's own when ``uniform``
    numa: int | None
    #: all members on one NUMA node (always so for the VFs of one PF); otherwise the group's node
    #: is that of its first free candidate, found per request
    uniform: bool


class PoolLayout:
    """What GetPreferredAllocation needs from one device list, independent of any request.

    Immutable once built; one per device list (the pool's view carries it, so a rescan replaces
    it and a health change keeps it).
    """

    __slots__ = ("group_of", "groups", "ids", "numa", "position")

    def __init__(self, devices: Mapping[str, PoolDevice]) -> None:
        members: dict[str, list[PoolDevice]] = {}
        for device in sorted(devices.values(), key=_order_key):
            members.setdefault(_group_key(device), []).append(device)
        groups = []
        group_of: dict[str, int] = {}
        for index, (key, devs) in enumerate(members.items()):
            uniform = len({d.function.numa_node for d in devs}) == 1
            groups.append(
                _Group(key, tuple(d.id for d in devs), devs[0].function.numa_node, uniform)
            )
            group_of.update((d.id, index) for d in devs)
        self.groups: tuple[_Group, ...] = tuple(groups)
        #: device id -> index in :attr:`groups`
        self.group_of: Mapping[str, int] = group_of
        #: device id -> index in its group's ``ids``
        self.position: Mapping[str, int] = {
            i: n for group in groups for n, i in enumerate(group.ids)
        }
        #: device id -> NUMA node
        self.numa: Mapping[str, int | None] = {
            d.id: d.function.numa_node for devs in members.values() for d in devs
        }
        self.ids = frozenset(group_of)

    def choose(
        self,
        policy: AllocationPolicy,
        available: Iterable[str],
        must_include: Iterable[str],
        size: int,
    ) -> list[str]:
        """The preferred ids for one container (may raise on bad input; see :func:`preferred`)."""
        if policy is AllocationPolicy.NONE or size <= 0:
            return []
        must = list(dict.fromkeys(must_include))
        if len(must) > size:
            return []
        offered = set(available)
        if any(i not in self.group_of or i not in offered for i in must):
            return []  # a must-include id of another pool, or not offered: cannot be honoured
        if len(must) == size:
            return must
        need = size - len(must)
        picked = _Request(self, offered, must).pick(policy, need)
        if len(picked) != need:
            return []
        return must + picked


class _Request:
    """One container's request against a :class:`PoolLayout`: free counts per group, and the
    free ids of a group in VF order, read only as far as they are taken.

    Work follows the smaller side: when most of the pool is offered (the usual case: the kubelet
    offers every free id), the few known ids that are not are counted and a group's free ids are
    its VFs in order, skipping those; when few are offered (a pool nearly all allocated), the
    offered ids are put in their groups and only a chosen group's are sorted.
    """

    def __init__(self, layout: PoolLayout, offered: Collection[str], must: list[str]) -> None:
        self.layout = layout
        self.offered = offered
        self.must = set(must)
        self.taken = Counter(layout.group_of[i] for i in must)
        self.numas = {n for i in must if (n := layout.numa[i]) is not None}
        #: the offered known ids of each group, when few are offered (else None)
        self.buckets: dict[int, list[str]] | None = None
        if 2 * len(offered) >= len(layout.ids):
            missing = Counter(layout.group_of[i] for i in layout.ids.difference(offered))
            present = [len(group.ids) - missing[n] for n, group in enumerate(layout.groups)]
        else:
            self.buckets = {}
            for i in offered:
                index = layout.group_of.get(i)
                if index is not None:
                    self.buckets.setdefault(index, []).append(i)
            present = [len(self.buckets.get(n, ())) for n in range(len(layout.groups))]
        # free candidates per group (must-include ids are offered but are not candidates)
        self.free = [count - self.taken[n] for n, count in enumerate(present)]

    def free_ids(self, index: int) -> Iterator[str]:
        must = self.must
        if self.buckets is None:
            offered = self.offered
            return (i for i in self.layout.groups[index].ids if i in offered and i not in must)
        ordered = sorted(self.buckets[index], key=self.layout.position.__getitem__)
        return (i for i in ordered if i not in must)

    def tier(self, index: int) -> int:
        """0: on a must-include NUMA node (or no NUMA preference), 1: elsewhere."""
        if not self.numas:
            return 0
        group = self.layout.groups[index]
        numa = group.numa if group.uniform else self.layout.numa[next(self.free_ids(index))]
        return 0 if numa in self.numas else 1

    def pick(self, policy: AllocationPolicy, need: int) -> list[str]:
        live = [index for index, free in enumerate(self.free) if free > 0]
        if sum(self.free[index] for index in live) < need:
            return []
        if policy is AllocationPolicy.PACKED:
            return self.packed(live, need)
        return self.balanced(live, need)

    def packed(self, live: list[int], need: int) -> list[str]:
        groups = self.layout.groups
        # the PF that already holds must-include devices first, then the fullest (fewest free)
        live.sort(key=lambda g: (self.tier(g), -self.taken[g], self.free[g], groups[g].key))
        out: list[str] = []
        for index in live:
            for device_id in self.free_ids(index):
                out.append(device_id)
                if len(out) == need:
                    return out
        return out

    def balanced(self, live: list[int], need: int) -> list[str]:
        groups = self.layout.groups
        # one device at a time from the least used, then the freest group: only the group just
        # used changes rank, so a heap keeps the order (group keys are unique: no ties)
        heap = [(self.tier(g), self.taken[g], -self.free[g], groups[g].key, g) for g in live]
        heapq.heapify(heap)
        readers: dict[int, Iterator[str]] = {}
        out: list[str] = []
        while len(out) < need and heap:
            tier, taken, negative_free, key, index = heapq.heappop(heap)
            reader = readers.get(index)
            if reader is None:
                reader = readers[index] = self.free_ids(index)
            out.append(next(reader))
            if negative_free < -1:
                heapq.heappush(heap, (tier, taken + 1, negative_free + 1, key, index))
        return out


def choose(
    policy: AllocationPolicy,
    devices: Mapping[str, PoolDevice],
    available: Iterable[str],
    must_include: Iterable[str],
    size: int,
) -> list[str]:
    """:meth:`PoolLayout.choose` over ``devices`` (builds the layout: for one-off use; the worker
    keeps one layout per device list)."""
    return PoolLayout(devices).choose(policy, available, must_include, size)


def preferred(
    policy: AllocationPolicy,
    layout: PoolLayout,
    available: Iterable[str],
    must_include: Iterable[str],
    size: int,
) -> list[str]:
    """Like :meth:`PoolLayout.choose`, but logs and returns an empty answer on any problem."""
    try:
        return layout.choose(policy, available, must_include, size)
    except Exception:
        log.exception("preferred allocation failed; answering with no preference")
        return []
