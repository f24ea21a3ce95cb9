"""The metrics endpoint's address: default and parsing (CLI, supervisor and metrics process;
stdlib only)."""

from __future__ import annotations

#: every address of the node (a hostNetwork pod's probes and scrapes come to the node's IP, not
#: to 127.0.0.1); the port is outside the kubelet's (10248-10259) and the node exporter's (9100)
DEFAULT_METRICS_ADDRESS = "0.0.0.0:9830"


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 host in brackets, [{host}]:{port}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port {port!r} is not a number from 0 to 65535")
    return host, int(port)
