"""sriovdp.shared.routes: default-route interfaces from /proc/net/route."""

from __future__ import annotations

from pathlib import Path

from sriovdp.shared.routes import default_route_ifaces, parse_route_table

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def test_default_routes_only() -> None:
    table = HEADER + (
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth1\t00000000\t010300C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth2\t00000000\t010400C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"  # not up
        "eth3\t00000000\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"  # not a /0
        "garbage line\n"
        "eth4\tXYZ\t0\t0001\t0\t0\t0\t00000000\n"
    )
    assert parse_route_table(table) == {"eth0", "eth1"}


def test_reads_proc_root(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/route").write_text(HEADER + "up0\t00000000\t0\t0003\t0\t0\t0\t00000000\n")
    assert default_route_ifaces(tmp_path) == {"up0"}


def test_unreadable_means_none(tmp_path: Path) -> None:
    assert default_route_ifaces(tmp_path) == frozenset()


def test_real_proc_is_parsed() -> None:
    real = Path("/proc/net/route")
    expected = {
        cols[0]
        for cols in (line.split() for line in real.read_text().splitlines()[1:])
        if cols[1] == "00000000" and cols[7] == "00000000" and int(cols[3], 16) & 1
    }
    assert default_route_ifaces() == expected
