"""Config parsing and validation (every process that reads the config: CLI, supervisor, workers).

Owns the translation of a ``{"resourceList": [...]}`` JSON document into a validated
:class:`~sriovdp.shared.model.NodeConfig`. Pure: :func:`parse_config` looks at the text only (no
sysfs, no environment); :func:`load_config` adds reading the file.

Both formats are accepted and may be mixed per entry:

- legacy (2.x): ``resourceName``, ``rootDevices`` (PCI addresses), ``sriovMode``, ``deviceType``
  ``netdevice`` | ``uio`` | ``vfio``. An entry is legacy when it has ``rootDevices`` or
  ``sriovMode`` at entry level. It becomes one selector (``rootDevices`` VF filters when
  ``sriovMode`` is true, ``pciAddresses`` otherwise), no class restriction, ``legacy_driver`` set.
- selector (3.x): ``resourceName``, ``resourcePrefix``, ``deviceType`` ``netDevice`` |
  ``accelerator`` | ``auxNetDevice``, ``excludeTopology``, ``additionalInfo``, ``selectors``
  (object or list). Which selector fields a pool may use depends on its ``deviceType``
  (``auxTypes`` only for ``auxNetDevice``; ``vdpaType``, ``ddpProfiles``, ``pKeys`` only for
  ``netDevice``); ``pKeys`` needs ``linkTypes: ["infiniband"]`` in the same selector and
  ``vdpaType`` excludes ``isRdma: true``, as upstream documents.

Both take the new ``allocationPolicy`` (``packed`` default, ``balanced``, ``none``) and the
pool-level ``resourcePrefix``, ``excludeTopology`` and ``additionalInfo``.

Every problem is collected and reported at once in one :class:`ConfigError`, one line each:
``<file>: <json path>: <value>: <problem>``. Decisions worth knowing:

- An empty ``resourceList`` is valid (a node with no pools); :func:`config_warnings` reports it so
  ``validate-config`` can say so. A missing ``resourceList`` key is an error.
- An empty field list inside a selector (``"drivers": []``) is not applied, as in the original;
  an empty ``selectors`` list or legacy ``rootDevices`` list is an error (the pool could never
  mean anything).
- PCI addresses may be short (``02:00.0`` means domain ``0000``); they are normalised to the full
  lower-case form. ``vendors``/``devices`` must be 4 lower-case hex digits without ``0x`` (sysfs
  compares exactly; a near miss gets a suggestion rather than a silent non-match).
- Duplicate keys inside one JSON object are errors (JSON parsers silently keep the last).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sriovdp.shared.model import (
    AllocationPolicy,
    DeviceType,
    LegacyDriverKind,
    NodeConfig,
    PoolConfig,
    Selector,
    VdpaType,
    VfFilter,
)

__all__ = [
    "AUX_NAME_RE",
    "LINK_TYPES",
    "MAX_VF_INDEX",
    "ConfigError",
    "config_warnings",
    "load_config",
    "normalize_pci_address",
    "parse_config",
    "parse_vf_filter",
]

#: link type names a ``linkTypes`` selector may use (what sysfs.py derives from ``net/<if>/type``)
LINK_TYPES = ("ether", "infiniband", "loopback", "none")
#: SR-IOV TotalVFs is a 16-bit register
MAX_VF_INDEX = 65535

RESOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PCI_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{4,8}):)?(?P<bus>[0-9a-fA-F]{2}):"
    r"(?P<slot>[0-9a-fA-F]{2})\.(?P<func>[0-7])$"
)
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HEX4_RE = re.compile(r"^[0-9a-f]{4}$")
_ACPI_INDEX_RE = re.compile(r"^[0-9]+$")
#: an auxiliary device name, ``<driver>.<type>.<id>`` (the kernel's auxiliary_device naming)
AUX_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+\.(?P<type>[A-Za-z0-9_-]+)\.(?P<id>[0-9]+)$")
_AUX_TYPE_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PKEY_RE = re.compile(r"^(?:0[xX])?([0-9a-fA-F]{1,4})$")
_IFNAME_FORBIDDEN_RE = re.compile(r"[/:\s]")
_MAX_NAME_LEN = 63  # the name part of a Kubernetes qualified name
_MAX_PREFIX_LEN = 253
_MAX_VALUE_SHOWN = 60
#: kernel modules often put in ``drivers`` that no PCI function is ever bound to -> the driver
#: those functions do have (the upstream README's own example uses mlx5_ib)
_NOT_PCI_DRIVERS = {"mlx5_ib": "mlx5_core"}

_COMMON_KEYS = (
    "resourceName",
    "resourcePrefix",
    "deviceType",
    "excludeTopology",
    "additionalInfo",
    "allocationPolicy",
)
_LEGACY_KEYS = ("rootDevices", "sriovMode")
_SELECTOR_ENTRY_KEYS = ("selectors",)
_ENTRY_KEYS = _COMMON_KEYS + _LEGACY_KEYS + _SELECTOR_ENTRY_KEYS
_SELECTOR_KEYS = (
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "acpiIndexes",
    "isRdma",
    "needVhostNet",
    "auxTypes",
    "ddpProfiles",
    "pKeys",
    "vdpaType",
)
#: selector fields that mean nothing for a deviceType (everything else applies to all)
_NOT_FOR = {
    DeviceType.NET_DEVICE: ("auxTypes",),
    DeviceType.ACCELERATOR: ("auxTypes", "vdpaType", "ddpProfiles", "pKeys"),
    DeviceType.AUX_NET_DEVICE: ("vdpaType", "ddpProfiles", "pKeys", "needVhostNet"),
}


class ConfigError(ValueError):
    """An invalid config; ``errors`` holds every problem, ``str()`` lists them one per line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


class _Obj(dict[str, Any]):
    """A JSON object that remembers keys it saw more than once."""

    duplicates: list[str]


def _object_hook(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _show(value: Any) -> str:
    """A value as JSON, shortened for one-line messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_VALUE_SHOWN:
        text = text[: _MAX_VALUE_SHOWN - 3] + "..."
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    import difflib  # only when a config has a typo: the supervisor would carry it for good

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f'; did you mean "{close[0]}"?' if close else ""


def normalize_pci_address(text: str) -> str | None:
    """``"02:00.0"`` -> ``"0000:02:00.0"``; None when it is not a PCI address.

    The slot is 5 bits (00-1f) and the function 3 bits (0-7).
    """
    m = _PCI_RE.match(text)
    if m is None or int(m["slot"], 16) > 0x1F:
        return None
    domain = m["domain"] or "0000"
    return f"{domain}:{m['bus']}:{m['slot']}.{m['func']}".lower()


def _parse_index_list(text: str) -> tuple[frozenset[int] | None, str | None]:
    """``"0,3-5"`` -> ``{0, 3, 4, 5}``; or (None, problem)."""
    if text == "":
        return None, "empty VF index list after '#'"
    indexes: set[int] = set()
    for raw_part in text.split(","):
        part = raw_part.strip()
        if part == "":
            return None, f"empty item in VF index list {text!r}"
        lo_text, sep, hi_text = part.partition("-")
        if not lo_text.isdecimal() or (sep and not hi_text.isdecimal()):
            return None, f"VF index {part!r} is not a number or a range A-B"
        lo = int(lo_text)
        hi = int(hi_text) if sep else lo
        if lo > hi:
            return None, f"VF range {part!r} is backwards ({lo} > {hi})"
        if hi > MAX_VF_INDEX:
            return None, f"VF index {hi} is out of range (0-{MAX_VF_INDEX})"
        indexes.update(range(lo, hi + 1))
    return frozenset(indexes), None


def _valid_ifname(name: str) -> bool:
    return 0 < len(name) < 16 and name not in (".", "..") and not _IFNAME_FORBIDDEN_RE.search(name)


def parse_vf_filter(text: str, *, need_address: bool) -> tuple[VfFilter | None, str | None]:
    """One ``pfNames``/``rootDevices`` entry, ``<PF>[#<list>]``; or (None, problem).

    ``need_address``: the PF part must be a PCI address (``rootDevices``); otherwise it may be a
    netdev name or a PCI address (``pfNames``). Addresses are normalised.
    """
    pf, sep, rest = text.partition("#")
    indexes: frozenset[int] | None = None
    if sep:
        indexes, problem = _parse_index_list(rest)
        if problem:
            return None, problem
    address = normalize_pci_address(pf)
    if address is not None:
        return VfFilter(address, indexes), None
    if need_address:
        return None, f"{pf!r} is not a PCI address ([dddd:]bb:ss.f)"
    if not _valid_ifname(pf):
        return None, f"{pf!r} is neither a network interface name nor a PCI address"
    return VfFilter(pf, indexes), None


def _prefix_problem(prefix: str) -> str | None:
    if "/" in prefix:
        return "must not contain '/'"
    if ".." in prefix:
        return "must not contain '..'"
    if len(prefix) > _MAX_PREFIX_LEN:
        return f"is longer than {_MAX_PREFIX_LEN} characters"
    labels = prefix.split(".")
    if prefix == "" or not all(_DNS_LABEL_RE.match(label) for label in labels):
        return "is not a DNS subdomain (lower-case letters, digits, '-' and '.')"
    if prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"):
        return "is reserved (kubernetes.io)"
    return None


class _Parser:
    """One pass over the parsed JSON, collecting every problem."""

    def __init__(self, path: str, default_prefix: str) -> None:
        self.path = path
        self.default_prefix = default_prefix
        self.errors: list[str] = []

    def err(self, where: str, problem: str, value: Any = ..., show: bool = True) -> None:
        shown = f"{_show(value)}: " if show and value is not ... else ""
        self.errors.append(f"{self.path}: {where}: {shown}{problem}")

    # -- generic shapes -------------------------------------------------------------------------

    def check_keys(self, obj: dict[str, Any], where: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if isinstance(obj, _Obj):
            for key in obj.duplicates:
                self.err(_join(where, key), "duplicate key (only the last one would count)")
        for key in obj:
            if key not in allowed:
                self.err(_join(where, key), "unknown key" + _did_you_mean(key, allowed))

    def typed(self, value: Any, where: str, kind: str) -> bool:
        if _kind(value) == kind:
            return True
        article = "an" if kind[0] in "aeiou" else "a"
        self.err(where, f"expected {article} {kind}, got {_kind(value)}", value)
        return False

    def boolean(self, obj: dict[str, Any], key: str, where: str, default: bool) -> bool:
        if key not in obj:
            return default
        value = obj[key]
        return bool(value) if self.typed(value, _join(where, key), "boolean") else default

    def enum(self, obj: dict[str, Any], key: str, where: str, choices: Iterable[str]) -> str | None:
        if key not in obj:
            return None
        value = obj[key]
        at = _join(where, key)
        if not self.typed(value, at, "string"):
            return None
        choices = tuple(choices)
        if value not in choices:
            expected = ", ".join(f'"{c}"' for c in choices)
            self.err(
                at,
                f"unknown value, expected one of {expected}{_did_you_mean(value, choices)}",
                value,
            )
            return None
        return str(value)

    def strings(
        self,
        obj: dict[str, Any],
        key: str,
        where: str,
        check: Callable[[str], tuple[Any, str | None]] | None = None,
    ) -> list[Any]:
        """A list of strings (each optionally checked and converted by ``check``)."""
        if key not in obj:
            return []
        at = _join(where, key)
        value = obj[key]
        if not self.typed(value, at, "array"):
            return []
        out: list[Any] = []
        for i, item in enumerate(value):
            item_at = f"{at}[{i}]"
            if not self.typed(item, item_at, "string"):
                continue
            if check is None:
                if item == "":
                    self.err(item_at, "empty string", item)
                else:
                    out.append(item)
                continue
            converted, problem = check(item)
            if problem is not None:
                self.err(item_at, problem, item)
            else:
                out.append(converted)
        return out

    # -- the document ---------------------------------------------------------------------------

    def document(self, doc: Any) -> list[PoolConfig]:
        if not isinstance(doc, dict):
            self.err("(top level)", f"expected an object with resourceList, got {_kind(doc)}", doc)
            return []
        self.check_keys(doc, "", ("resourceList",))
        if "resourceList" not in doc:
            self.err("(top level)", 'missing required key "resourceList"')
            return []
        entries = doc["resourceList"]
        if not self.typed(entries, "resourceList", "array"):
            return []
        pools: list[PoolConfig] = []
        for i, entry in enumerate(entries):
            pool = self.entry(entry, f"resourceList[{i}]", i)
            if pool is not None:
                pools.append(pool)
        self.uniqueness(pools)
        return pools

    def uniqueness(self, pools: list[PoolConfig]) -> None:
        by_resource: dict[str, int] = {}
        by_child: dict[str, PoolConfig] = {}
        for pool in pools:
            where = f"resourceList[{pool.index}]"
            first = by_resource.setdefault(pool.resource, pool.index)
            if first != pool.index:
                self.err(
                    where,
                    f"duplicate resource {pool.resource!r} (already defined by "
                    f"resourceList[{first}])",
                    show=False,
                )
                continue
            other = by_child.setdefault(pool.child_name, pool)
            if other is not pool:
                self.err(
                    where,
                    f"resource {pool.resource!r} has the same worker name {pool.child_name!r} as "
                    f"{other.resource!r} (resourceList[{other.index}]); rename one",
                    show=False,
                )

    def entry(self, entry: Any, where: str, index: int) -> PoolConfig | None:
        if not self.typed(entry, where, "object"):
            return None
        before = len(self.errors)
        self.check_keys(entry, where, _ENTRY_KEYS)
        legacy_keys = [k for k in _LEGACY_KEYS if k in entry]
        legacy = bool(legacy_keys)
        if legacy and "selectors" in entry:
            self.err(
                where,
                f"mixes legacy keys ({', '.join(legacy_keys)}) with selectors in one entry; "
                "use one format per entry",
                show=False,
            )

        name = self.resource_name(entry, where)
        prefix = self.resource_prefix(entry, where)
        policy = self.enum(entry, "allocationPolicy", where, [p.value for p in AllocationPolicy])
        exclude_topology = self.boolean(entry, "excludeTopology", where, False)
        additional = self.additional_info(entry, where)

        device_type: DeviceType | None = DeviceType.NET_DEVICE
        legacy_driver: LegacyDriverKind | None = None
        selectors: tuple[Selector, ...] = ()
        if legacy:
            legacy_driver = self.legacy_device_type(entry, where)
            device_type = None
            selectors = self.legacy_selectors(entry, where)
        else:
            device_type = self.selector_device_type(entry, where)
            if "selectors" not in entry:
                self.err(where, 'missing required key "selectors" (or legacy "rootDevices")')
            else:
                selectors = self.selectors(
                    entry["selectors"], _join(where, "selectors"), device_type
                )

        if len(self.errors) > before or name is None or prefix is None:
            return None
        return PoolConfig(
            resource_name=name,
            resource_prefix=prefix,
            selectors=selectors,
            device_type=device_type,
            legacy_driver=legacy_driver,
            exclude_topology=exclude_topology,
            additional_info=additional,
            allocation_policy=AllocationPolicy(policy) if policy else AllocationPolicy.PACKED,
            index=index,
        )

    def resource_name(self, entry: dict[str, Any], where: str) -> str | None:
        if "resourceName" not in entry:
            self.err(where, 'missing required key "resourceName"')
            return None
        at = _join(where, "resourceName")
        name = entry["resourceName"]
        if not self.typed(name, at, "string"):
            return None
        if not RESOURCE_NAME_RE.match(name):
            self.err(at, "must match ^[A-Za-z0-9_-]+$ (letters, digits, '_' and '-')", name)
            return None
        if len(name) > _MAX_NAME_LEN:
            self.err(at, f"is longer than {_MAX_NAME_LEN} characters", name)
            return None
        return str(name)

    def resource_prefix(self, entry: dict[str, Any], where: str) -> str | None:
        if "resourcePrefix" not in entry:
            problem = _prefix_problem(self.default_prefix)
            if problem:
                self.err(where, f"--resource-prefix {self.default_prefix!r} {problem}", show=False)
                return None
            return self.default_prefix
        at = _join(where, "resourcePrefix")
        prefix = entry["resourcePrefix"]
        if not self.typed(prefix, at, "string"):
            return None
        problem = _prefix_problem(prefix)
        if problem:
            self.err(at, problem, prefix)
            return None
        return str(prefix)

    def additional_info(
        self, entry: dict[str, Any], where: str
    ) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
        if "additionalInfo" not in entry:
            return ()
        at = _join(where, "additionalInfo")
        info = entry["additionalInfo"]
        if not self.typed(info, at, "object"):
            return ()
        self.check_keys(info, at, info.keys())  # duplicates only
        out: dict[str, tuple[tuple[str, str], ...]] = {}
        for key, mapping in info.items():
            key_at = _join(at, key)
            address = "*" if key == "*" else normalize_pci_address(key)
            if address is None and AUX_NAME_RE.match(key):
                address = key
            if address is None:
                self.err(
                    key_at,
                    'key must be "*", a PCI address or an auxiliary device name '
                    "(<driver>.<type>.<id>, e.g. mlx5_core.sf.4)",
                    key,
                )
                continue
            if address in out:
                self.err(key_at, f"same PCI address as another key ({address})", key)
                continue
            if not self.typed(mapping, key_at, "object"):
                continue
            self.check_keys(mapping, key_at, mapping.keys())
            pairs: list[tuple[str, str]] = []
            for k, v in mapping.items():
                if self.typed(v, _join(key_at, k), "string"):
                    pairs.append((k, v))
            out[address] = tuple(sorted(pairs))
        return tuple(sorted(out.items()))

    # -- legacy -----------------------------------------------------------------------------------

    def legacy_device_type(self, entry: dict[str, Any], where: str) -> LegacyDriverKind | None:
        if "deviceType" in entry and entry["deviceType"] in [d.value for d in DeviceType]:
            self.err(
                _join(where, "deviceType"),
                f"is a selector-format device type; a legacy entry (with rootDevices/sriovMode) "
                f"takes one of {', '.join(repr(k.value) for k in LegacyDriverKind)}",
                entry["deviceType"],
            )
            return None
        kind = self.enum(entry, "deviceType", where, [k.value for k in LegacyDriverKind])
        return LegacyDriverKind(kind) if kind else LegacyDriverKind.NETDEVICE

    def legacy_selectors(self, entry: dict[str, Any], where: str) -> tuple[Selector, ...]:
        sriov_mode = self.boolean(entry, "sriovMode", where, False)
        if "rootDevices" not in entry:
            self.err(where, 'missing required key "rootDevices" (legacy format)')
            return ()
        at = _join(where, "rootDevices")
        if isinstance(entry["rootDevices"], list) and not entry["rootDevices"]:
            self.err(at, "empty list: a pool needs at least one root device", entry["rootDevices"])
            return ()
        addresses = self.strings(entry, "rootDevices", where, _address_check)
        if sriov_mode:
            return (Selector(root_devices=tuple(VfFilter(a) for a in addresses)),)
        return (Selector(pci_addresses=tuple(addresses)),)

    # -- selector format ---------------------------------------------------------------------

    def selector_device_type(self, entry: dict[str, Any], where: str) -> DeviceType | None:
        value = entry.get("deviceType")
        if value in [k.value for k in LegacyDriverKind]:
            self.err(
                _join(where, "deviceType"),
                "is a legacy device type, which needs rootDevices/sriovMode; with selectors use "
                + " or ".join(repr(d.value) for d in DeviceType),
                value,
            )
            return None
        kind = self.enum(entry, "deviceType", where, [d.value for d in DeviceType])
        return DeviceType(kind) if kind else DeviceType.NET_DEVICE

    def selectors(
        self, value: Any, where: str, device_type: DeviceType | None
    ) -> tuple[Selector, ...]:
        if isinstance(value, dict):
            sel = self.selector(value, where, device_type)
            return (sel,) if sel else ()
        if not isinstance(value, list):
            self.err(where, f"expected an object or an array of objects, got {_kind(value)}", value)
            return ()
        if not value:
            self.err(where, "empty selector list: give at least one selector object", value)
            return ()
        out: list[Selector] = []
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if self.typed(item, at, "object"):
                sel = self.selector(item, at, device_type)
                if sel:
                    out.append(sel)
        return tuple(out)

    def selector(
        self, obj: dict[str, Any], where: str, device_type: DeviceType | None
    ) -> Selector | None:
        self.check_keys(obj, where, _SELECTOR_KEYS)
        not_for = _NOT_FOR[device_type] if device_type is not None else ()
        if device_type is not None:
            for key in not_for:
                if key in obj:
                    only = ' (only for deviceType "auxNetDevice")' if key == "auxTypes" else ""
                    self.err(
                        _join(where, key),
                        f'not applicable to deviceType "{device_type.value}"{only}',
                        obj[key],
                    )
        is_rdma = self.boolean(obj, "isRdma", where, False) if "isRdma" in obj else None
        link_types = tuple(self.strings(obj, "linkTypes", where, _link_type_check))
        pkeys = tuple(self.strings(obj, "pKeys", where, _pkey_check))
        if pkeys and link_types != ("infiniband",) and "pKeys" not in not_for:
            self.err(
                _join(where, "pKeys"),
                'only valid with linkTypes: ["infiniband"] in the same selector',
                obj["pKeys"],
            )
        vdpa = self.enum(obj, "vdpaType", where, [t.value for t in VdpaType])
        if vdpa is not None and is_rdma and "vdpaType" not in not_for:
            self.err(
                _join(where, "vdpaType"),
                "cannot be combined with isRdma: true (a vDPA device has no RDMA device)",
                vdpa,
            )
        return Selector(
            vendors=tuple(self.strings(obj, "vendors", where, _hex4_check)),
            devices=tuple(self.strings(obj, "devices", where, _hex4_check)),
            drivers=tuple(self.strings(obj, "drivers", where)),
            pci_addresses=tuple(self.strings(obj, "pciAddresses", where, _address_check)),
            pf_names=tuple(self.strings(obj, "pfNames", where, _pf_name_check)),
            root_devices=tuple(self.strings(obj, "rootDevices", where, _root_device_check)),
            link_types=link_types,
            acpi_indexes=tuple(self.strings(obj, "acpiIndexes", where, _acpi_check)),
            is_rdma=is_rdma,
            need_vhost_net=self.boolean(obj, "needVhostNet", where, False),
            aux_types=tuple(self.strings(obj, "auxTypes", where, _aux_type_check)),
            ddp_profiles=tuple(self.strings(obj, "ddpProfiles", where)),
            pkeys=pkeys,
            vdpa_type=VdpaType(vdpa) if vdpa is not None else None,
        )


def _join(where: str, key: str) -> str:
    if not where:
        return key
    if RESOURCE_NAME_RE.match(key):
        return f"{where}.{key}"
    return f"{where}[{json.dumps(key, ensure_ascii=False)}]"


def _address_check(text: str) -> tuple[str | None, str | None]:
    address = normalize_pci_address(text)
    if address is None:
        return None, "not a PCI address ([dddd:]bb:ss.f, e.g. 0000:02:00.0)"
    return address, None


def _hex4_check(text: str) -> tuple[str | None, str | None]:
    if _HEX4_RE.match(text):
        return text, None
    bare = text.lower().removeprefix("0x")
    hint = f'; did you mean "{bare}"?' if _HEX4_RE.match(bare) else ""
    return None, f"expected 4 lower-case hex digits without 0x (e.g. 8086){hint}"


def _pf_name_check(text: str) -> tuple[VfFilter | None, str | None]:
    return parse_vf_filter(text, need_address=False)


def _root_device_check(text: str) -> tuple[VfFilter | None, str | None]:
    return parse_vf_filter(text, need_address=True)


def _link_type_check(text: str) -> tuple[str | None, str | None]:
    if text in LINK_TYPES:
        return text, None
    expected = ", ".join(f'"{t}"' for t in LINK_TYPES)
    return None, f"unknown link type, expected one of {expected}{_did_you_mean(text, LINK_TYPES)}"


def _aux_type_check(text: str) -> tuple[str | None, str | None]:
    if _AUX_TYPE_RE.match(text):
        return text, None
    return None, 'expected the middle part of an auxiliary device name (e.g. "sf" or "eth")'


def _pkey_check(text: str) -> tuple[int | None, str | None]:
    """A partition key, hex in any case, with or without ``0x``: ``"0x7FFF"`` -> 0x7FFF."""
    m = _PKEY_RE.match(text)
    if m is None:
        return None, "expected a 16-bit hex partition key (e.g. 0x7fff, 0xFFFF or 8001)"
    return int(m[1], 16), None


def _acpi_check(text: str) -> tuple[str | None, str | None]:
    if _ACPI_INDEX_RE.match(text):
        return text, None
    return None, "expected a decimal ACPI index"


def parse_config(text: str, path: str, default_prefix: str) -> NodeConfig:
    """Validates a config document; raises :class:`ConfigError` listing every problem."""
    try:
        doc = json.loads(text, object_pairs_hook=_object_hook)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]
        ) from None
    except RecursionError:
        raise ConfigError([f"{path}: invalid JSON: nested too deeply"]) from None
    parser = _Parser(path, default_prefix)
    pools = parser.document(doc)
    if parser.errors:
        raise ConfigError(parser.errors)
    return NodeConfig(path=path, pools=tuple(pools), text=text)


def load_config(path: str | Path, default_prefix: str) -> NodeConfig:
    """Reads and validates a config file; raises :class:`ConfigError` (also for a missing file)."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}: not UTF-8 text (byte {exc.start})"]) from None
    return parse_config(text, name, default_prefix)


def config_warnings(config: NodeConfig) -> list[str]:
    """Things that are valid but probably not what the user meant."""
    warnings: list[str] = []
    if not config.pools:
        warnings.append(f"{config.path}: resourceList is empty: no pools will be advertised")
    for pool in config.pools:
        named = {d for s in pool.selectors for d in s.drivers}
        for module, driver in sorted(_NOT_PCI_DRIVERS.items()):
            if module in named:
                warnings.append(
                    f'{config.path}: resourceList[{pool.index}]: drivers "{module}" never '
                    f'matches: it is not a PCI driver (such functions are bound to "{driver}")'
                )
    return warnings
