"""The node's IPv4 default-route interfaces, from procfs (CLI ``discover``, plugin workers).

Owns reading ``<proc-root>/net/route``. A netdev carrying a default route is the node's own
uplink and is never offered to pods. An unreadable file means "no default route known".
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["default_route_ifaces", "parse_route_table"]

log = logging.getLogger(__name__)

_RTF_UP = 0x1
_MIN_COLUMNS = 8  # Iface Destination Gateway Flags RefCnt Use Metric Mask


def parse_route_table(text: str) -> frozenset[str]:
    """Interfaces of the up routes with destination and mask 0.0.0.0 in ``/proc/net/route``."""
    ifaces: set[str] = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < _MIN_COLUMNS:
            continue
        iface, dest, flags, mask = cols[0], cols[1], cols[3], cols[7]
        try:
            up = int(flags, 16) & _RTF_UP
            default = int(dest, 16) == 0 and int(mask, 16) == 0
        except ValueError:
            continue
        if up and default:
            ifaces.add(iface)
    return frozenset(ifaces)


def default_route_ifaces(proc_root: Path = Path("/proc")) -> frozenset[str]:
    """The netdevs carrying an IPv4 default route; empty when the table cannot be read."""
    path = Path(proc_root) / "net" / "route"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return frozenset()
    return parse_route_table(text)
