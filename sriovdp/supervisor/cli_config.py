"""``validate-config`` and ``discover`` (CLI process; imports no grpc or pyroute2).

Owns rendering config errors and discovery results for people (tables) and scripts (``--json``).
Exit codes: 0 fine, 2 (:data:`~sriovdp.shared.exitcodes.INVALID_CONFIG`) for an invalid config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from sriovdp.shared import exitcodes, pools, routes, sysfs
from sriovdp.shared.config import ConfigError, config_warnings, load_config
from sriovdp.shared.model import AuxDevice, NodeConfig, PciFunction, PoolDevice, PoolDiscovery
from sriovdp.supervisor import options

_COLUMNS = ("ID", "DRIVER", "PF", "PF NAME", "VF", "NETDEV", "NUMA", "IOMMU", "RDMA", "EXTRA",
            "HEALTH LINK")  # fmt: skip
#: columns shown only when a device of the pool has something in them
_OPTIONAL = ("RDMA", "EXTRA")


def _load_or_exit(config_file: str, resource_prefix: str) -> NodeConfig:
    try:
        config = load_config(config_file, resource_prefix)
    except ConfigError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        click.echo(f"{len(exc.errors)} problem(s) in {config_file}", err=True)
        sys.exit(exitcodes.INVALID_CONFIG)
    for warning in config_warnings(config):
        click.echo(f"warning: {warning}", err=True)
    return config


@click.command("validate-config")
@options.config_file
@options.resource_prefix
def validate_config(config_file: str, resource_prefix: str) -> None:
    """Check a config file; exit 0 when valid, 2 with every problem listed otherwise."""
    config = _load_or_exit(config_file, resource_prefix)
    click.echo(f"{config_file}: valid, {len(config.pools)} pool(s)")
    for pool in config.pools:
        kind = "legacy" if pool.legacy_driver is not None else "selectors"
        click.echo(f"  {pool.resource} ({kind}, allocationPolicy {pool.allocation_policy.value})")


def _show(value: object) -> str:
    return "-" if value is None else str(value)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


class _Links:
    """The link that decides each device's health (a VF follows its PF's netdev) and its
    operstate, read from the same sysfs tree: what the health monitor will report for it."""

    def __init__(self, root: Path, functions: list[PciFunction]) -> None:
        self.root = root
        self.by_netdev = {fn.netdev: fn for fn in functions if fn.netdev is not None}

    def state(self, dev: PoolDevice) -> str | None:
        fn = self.by_netdev.get(dev.health_link) if dev.health_link is not None else None
        return None if fn is None else sysfs.operstate(self.root, fn)

    def cell(self, dev: PoolDevice) -> str:
        """``<ifname>:<operstate>`` (``?`` when unreadable), or ``-`` for a device without one."""
        if dev.health_link is None:
            return "-"
        return f"{dev.health_link}:{self.state(dev) or '?'}"


def _row(dev: PoolDevice) -> tuple[object, ...]:
    """The table's cells: for an auxiliary device, PF is its parent and VF its SF number."""
    fn, aux = dev.function, dev.aux
    extras = [f"vdpa:{fn.vdpa.name}"] if dev.vdpa_type is not None and fn.vdpa else []
    extras += [f"cxi:{c}" for c in fn.cxi_devices if aux is None]
    extras += [f"pkey:0x{k:04x}" for k in (aux.pkeys if aux else fn.pkeys) if dev.is_rdma]
    rdma = ",".join(dev.rdma_devices) if dev.is_rdma else ""
    if aux is not None:
        return (aux.name, aux.driver, fn.address, fn.netdev, aux.index, aux.netdev,
                fn.numa_node, None, rdma or None,
                " ".join(extras) or None)  # fmt: skip
    return (fn.address, fn.driver, fn.pf_address, fn.pf_name, fn.vf_index, fn.netdev,
            fn.numa_node, fn.iommu_group, rdma or None,
            " ".join(extras) or None)  # fmt: skip


def _device_json(dev: PoolDevice, links: _Links) -> dict[str, Any]:
    fn, aux = dev.function, dev.aux
    doc: dict[str, Any] = {
        "id": dev.id,
        # vendor and device of the PCI function (an auxiliary device's parent)
        "vendor": fn.vendor,
        "device": fn.device,
        "driver": aux.driver if aux is not None else fn.driver,
        "pf": fn.address if aux is not None else fn.pf_address,
        "pfName": fn.netdev if aux is not None else fn.pf_name,
        "vfIndex": None if aux is not None else fn.vf_index,
        "netdev": aux.netdev if aux is not None else fn.netdev,
        "linkType": aux.link_type if aux is not None else fn.link_type,
        "numaNode": fn.numa_node,
        "iommuGroup": None if aux is not None else fn.iommu_group,
        "healthLink": dev.health_link,
        "healthLinkState": links.state(dev),
    }
    # the keys below only when they apply
    if dev.rdma_devices and dev.is_rdma:
        doc["rdmaDevices"] = list(dev.rdma_devices)
    if aux is not None:
        doc["auxType"] = aux.aux_type
        doc["sfIndex"] = aux.index
    if dev.vdpa_type is not None and fn.vdpa is not None:
        doc["vdpa"] = {"name": fn.vdpa.name, "driver": fn.vdpa.driver}
    if fn.cxi_devices and aux is None:
        doc["cxiDevices"] = list(fn.cxi_devices)
    if dev.extra:
        doc["extra"] = dict(dev.extra)
    return doc


def _unused_note(result: PoolDiscovery) -> list[str]:
    return [
        f"additionalInfo {key!r} matches no device of this pool" for key in result.unused_info_ids
    ]


def _missing_note(path: str, ids: list[str]) -> str:
    return f"device node {path} does not exist on the host ({len(ids)} device(s) want it)"


def _empty_hint(result: PoolDiscovery) -> str:
    """One line for a pool with no device: where to look."""
    if result.not_found:
        return "hint: the pool names devices that are not on this node (not found above)"
    if result.excluded:
        return "hint: every device the pool matched is left out; the reasons are above"
    if result.pool.is_aux:
        return "hint: no auxiliary device matches; `discover --json` of the parent PFs shows them"
    return (
        "hint: no PCI function matches its selectors; compare them with `discover --json` of a "
        "pool that selects more (vendor, device, driver, pfName, linkType)"
    )


def _render_text(
    links: _Links,
    results: list[PoolDiscovery],
    warnings: list[str],
    missing: list[dict[str, list[str]]],
) -> None:
    for result, nodes in zip(results, missing, strict=True):
        click.echo(f"{result.pool.resource}: {len(result.devices)} device(s)")
        if result.devices:
            rows: list[tuple[str, ...]] = [_COLUMNS]
            for dev in result.devices:
                rows.append((*(_show(v) for v in _row(dev)), links.cell(dev)))
            empty = [
                i
                for i, name in enumerate(_COLUMNS)
                if name in _OPTIONAL and all(r[i] == "-" for r in rows[1:])
            ]
            rows = [tuple(c for i, c in enumerate(r) if i not in empty) for r in rows]
            for line in _table(rows):
                click.echo(f"  {line}")
        if result.excluded:
            click.echo("  excluded:")
            for ex in result.excluded:
                click.echo(f"    {ex.id}: {ex.reason}")
        if result.not_found:
            click.echo(f"  not found on this node: {', '.join(result.not_found)}")
        for path, ids in nodes.items():
            click.echo(f"  warning: {_missing_note(path, ids)}")
        for warning in result.warnings:
            click.echo(f"  warning: {warning}")
        for note in _unused_note(result):
            click.echo(f"  note: {note}")
        if not result.devices:
            click.echo(f"  {_empty_hint(result)}")
        click.echo("")
    if warnings:
        click.echo("warnings:")
        for warning in warnings:
            click.echo(f"  {warning}")


@click.command("discover")
@options.config_file
@options.sysfs_root
@options.resource_prefix
@options.proc_root
@options.dev_root
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def discover(  # noqa: PLR0917 (one parameter per click option)
    config_file: str,
    sysfs_root: str,
    resource_prefix: str,
    proc_root: str,
    dev_root: str,
    as_json: bool,
) -> None:
    """Show which devices of this node each pool would advertise, and which it leaves out."""
    # the device families a worker uses (no grpc): which device nodes each device needs
    from sriovdp.workers.plugin import drivers

    config = _load_or_exit(config_file, resource_prefix)
    root = Path(sysfs_root)
    reader = sysfs.Reader(root)
    functions = reader.functions()
    aux: list[AuxDevice] = reader.aux_devices() if any(p.is_aux for p in config.pools) else []
    results = pools.match(config, functions, routes.default_route_ifaces(Path(proc_root)), aux)
    results = [pools.explain(r, functions) for r in results]
    ctx = drivers.DriverContext(dev_root=Path(dev_root))
    missing = [drivers.missing_nodes(r.devices, ctx) for r in results]
    warnings = [f"{fn.address}: {w}" for fn in functions for w in fn.warnings]
    warnings += [f"{a.name}: {w}" for a in aux for w in a.warnings]
    if not functions:
        warnings.append(f"no PCI functions under {root / 'bus/pci/devices'}")
    links = _Links(root, functions)
    if not as_json:
        _render_text(links, results, warnings, missing)
        return
    doc = {
        "pools": [
            {
                "resource": r.pool.resource,
                "devices": [_device_json(d, links) for d in r.devices],
                "excluded": [{"id": e.id, "reason": e.reason} for e in r.excluded],
                "notFound": list(r.not_found),
                "missingDeviceNodes": [{"path": p, "devices": ids} for p, ids in nodes.items()],
                **({"warnings": list(r.warnings)} if r.warnings else {}),
                **({"notes": _unused_note(r)} if r.unused_info_ids else {}),
            }
            for r, nodes in zip(results, missing, strict=True)
        ]
    }
    click.echo(json.dumps(doc, indent=2))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


COMMANDS: list[click.Command] = [validate_config, discover]
