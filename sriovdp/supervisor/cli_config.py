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
from sriovdp.shared.model import NodeConfig, PciFunction, PoolDevice, PoolDiscovery
from sriovdp.supervisor import options

_COLUMNS = ("ID", "DRIVER", "PF", "PF NAME", "VF", "NETDEV", "NUMA", "IOMMU", "HEALTH LINK")


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


def _device_json(dev: PoolDevice, links: _Links) -> dict[str, Any]:
    fn = dev.function
    return {
        "id": fn.address,
        "driver": fn.driver,
        "pf": fn.pf_address,
        "pfName": fn.pf_name,
        "vfIndex": fn.vf_index,
        "netdev": fn.netdev,
        "numaNode": fn.numa_node,
        "iommuGroup": fn.iommu_group,
        "healthLink": dev.health_link,
        "healthLinkState": links.state(dev),
    }


def _render_text(links: _Links, results: list[PoolDiscovery], warnings: list[str]) -> None:
    for result in results:
        click.echo(f"{result.pool.resource}: {len(result.devices)} device(s)")
        if result.devices:
            rows: list[tuple[str, ...]] = [_COLUMNS]
            for dev in result.devices:
                fn = dev.function
                rows.append(
                    tuple(
                        _show(v)
                        for v in (
                            fn.address,
                            fn.driver,
                            fn.pf_address,
                            fn.pf_name,
                            fn.vf_index,
                            fn.netdev,
                            fn.numa_node,
                            fn.iommu_group,
                            links.cell(dev),
                        )
                    )
                )
            for line in _table(rows):
                click.echo(f"  {line}")
        if result.excluded:
            click.echo("  excluded:")
            for ex in result.excluded:
                click.echo(f"    {ex.id}: {ex.reason}")
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def discover(
    config_file: str, sysfs_root: str, resource_prefix: str, proc_root: str, as_json: bool
) -> None:
    """Show which devices of this node each pool would advertise, and which it leaves out."""
    config = _load_or_exit(config_file, resource_prefix)
    root = Path(sysfs_root)
    functions = sysfs.read_functions(root)
    results = pools.match(config, functions, routes.default_route_ifaces(Path(proc_root)))
    warnings = [f"{fn.address}: {w}" for fn in functions for w in fn.warnings]
    if not functions:
        warnings.append(f"no PCI functions under {root / 'bus/pci/devices'}")
    links = _Links(root, functions)
    if not as_json:
        _render_text(links, results, warnings)
        return
    doc = {
        "pools": [
            {
                "resource": r.pool.resource,
                "devices": [_device_json(d, links) for d in r.devices],
                "excluded": [{"id": e.id, "reason": e.reason} for e in r.excluded],
            }
            for r in results
        ]
    }
    click.echo(json.dumps(doc, indent=2))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


COMMANDS: list[click.Command] = [validate_config, discover]
