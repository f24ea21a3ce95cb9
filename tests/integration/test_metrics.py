"""End to end: the metrics child of a real supervisor tree on a simulated node, scraped over HTTP
and parsed with ``prometheus_client``; values checked against what the kubelet stand-in did."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from sriovdp.supervisor.client import ControlClient
from tests.harness.netns import NetNS
from tests.integration.conftest import SimNode, pf_netdev, resource
from tests.integration.metrics_scrape import get, scrape, value, wait_samples, wait_url

pytestmark = pytest.mark.timeout(120)

POOL0 = "intel-com_pool0"


@pytest.fixture
def node() -> Iterator[SimNode]:
    node = SimNode(2, 4)
    try:
        node.start_supervisor()
        yield node
    finally:
        node.close()


def _ready(node: SimNode) -> str:
    assert node.stand_in().wait_for(node.all_registered(), 30), node.log_text()
    return wait_url(node)


def test_scrape_counts_allocations_and_a_restart_after_sigkill(node: SimNode) -> None:
    base = _ready(node)
    k = node.stand_in()
    vfs = sorted(node.vfs(0))
    for vf in vfs[:3]:
        k.allocate(resource(0), [vf])
    k.allocate(resource(0), vfs[:2])
    with pytest.raises(grpc.RpcError):
        k.allocate(resource(0), ["0000:ff:00.0"])  # unknown: refused
    assert len(k.preferred(resource(0), vfs, [], 2)) == 2
    r0 = {"resource": resource(0)}

    def counted(s: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
        return value(s, "sriovdp_allocate_requests_total", outcome="ok", **r0) == 4

    samples = wait_samples(base, counted, what="4 Allocate calls counted")
    assert value(samples, "sriovdp_allocate_requests_total", outcome="invalid_argument", **r0) == 1
    assert value(samples, "sriovdp_allocated_devices_total", **r0) == 5
    assert value(samples, "sriovdp_preferred_allocation_requests_total", **r0) == 1
    assert value(samples, "sriovdp_allocate_duration_seconds_count", **r0) == 5
    assert value(samples, "sriovdp_allocate_duration_seconds_bucket", le="+Inf", **r0) == 5
    assert (
        value(samples, "sriovdp_allocate_requests_total", outcome="ok", resource=resource(1)) == 0
    )
    assert value(samples, "sriovdp_pool_devices", **r0) == 4
    assert value(samples, "sriovdp_pool_devices_healthy", **r0) == 4
    assert value(samples, "sriovdp_pool_registered", **r0) == 1
    assert value(samples, "sriovdp_pool_registrations_total", **r0) == 1
    pool0 = {"child": POOL0, "role": "plugin"}
    assert value(samples, "sriovdp_child_state", state="RUNNING", **pool0) == 1
    assert value(samples, "sriovdp_child_restarts_total", **pool0) == 0
    assert value(samples, "sriovdp_child_last_exit_code", **pool0) is None
    assert value(samples, "sriovdp_config_generation") == 1
    assert value(samples, "sriovdp_ready") == 1
    info = {"version": "0.1.0", "python_version": ".".join(map(str, sys.version_info[:3]))}
    assert value(samples, "sriovdp_build_info", **info) == 1

    os.kill(node.pid_of(POOL0), signal.SIGKILL)

    def restarted(s: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
        return (
            value(s, "sriovdp_child_restarts_total", **pool0) == 1
            and value(s, "sriovdp_child_state", state="RUNNING", **pool0) == 1
            and value(s, "sriovdp_pool_registrations_total", **r0) == 2
        )

    samples = wait_samples(base, restarted, what="pool0 restarted and registered again")
    assert value(samples, "sriovdp_child_last_exit_code", **pool0) == -signal.SIGKILL
    assert value(samples, "sriovdp_pool_registered", **r0) == 1
    # the counters of the killed worker are kept
    assert value(samples, "sriovdp_allocate_requests_total", outcome="ok", **r0) == 4
    assert value(samples, "sriovdp_allocated_devices_total", **r0) == 5
    other = {"child": "intel-com_pool1", "role": "plugin"}
    assert value(samples, "sriovdp_child_restarts_total", **other) == 0


def test_readyz_follows_registration_and_a_refused_reload(node: SimNode) -> None:
    base = _ready(node)
    wait_samples(base, lambda s: value(s, "sriovdp_ready") == 1, what="ready")
    assert get(base + "/healthz")[0] == 200
    status, ctype, body = get(base + "/readyz")
    assert (status, ctype) == (200, "text/plain; charset=utf-8"), body

    node.stand_in().stop()  # the kubelet goes away: no pool is registered
    wait_samples(base, lambda s: value(s, "sriovdp_ready") == 0, what="not ready")
    status, _, body = get(base + "/readyz")
    assert status == 503
    assert f"{resource(0)} is not registered" in body
    assert get(base + "/healthz")[0] == 200  # alive all the same
    node.start_kubelet()
    wait_samples(base, lambda s: value(s, "sriovdp_ready") == 1, what="ready again")

    node.config.write_text("{not json")
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)  # (--watch-config may have reloaded it already)
    samples = wait_samples(
        base,
        lambda s: (value(s, "sriovdp_config_reloads_total", outcome="refused") or 0) >= 1,
        what="a refused reload",
    )
    assert value(samples, "sriovdp_config_reloads_total", outcome="applied") == 0
    assert value(samples, "sriovdp_config_last_reload_successful") == 0
    assert value(samples, "sriovdp_config_generation") == 1
    status, _, body = get(base + "/readyz")
    assert status == 503
    assert "the last reload was refused" in body


def test_a_taken_port_is_reported_in_status_and_pools_still_serve() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    node = SimNode(1, 2)
    node.metrics_address = f"127.0.0.1:{taken.getsockname()[1]}"
    try:
        node.start_supervisor()
        k = node.stand_in()
        assert k.wait_for(node.all_registered(), 30), node.log_text()
        k.allocate(resource(0), [sorted(node.vfs(0))[0]])

        def reported() -> dict[str, object]:
            with ControlClient(node.run_dir, timeout=2.0) as client:
                metrics: dict[str, object] = client.request("status")["supervisor"]["metrics"]
            return metrics

        deadline_ok = k.wait_for(lambda _k: "in use" in str(reported().get("error")), 30)
        assert deadline_ok, (reported(), node.log_text())
        assert reported()["listening"] is False
        assert node.rows()["metrics"]["state"] == "RUNNING"  # not a restart loop
        assert "cannot listen on 127.0.0.1" in node.log_text()
        taken.close()  # the port is free again: the child binds on its next try
        assert k.wait_for(lambda _k: reported().get("listening") is True, 60), reported()
        assert get(f"http://{node.metrics_address}/healthz")[0] == 200
    finally:
        taken.close()
        node.close()


@pytest.mark.root
@pytest.mark.timeout(90)
def test_a_link_going_down_shows_in_the_metrics(linked_node: tuple[SimNode, NetNS]) -> None:
    node, ns = linked_node
    k = node.stand_in()
    assert k.wait_for(node.all_registered(), 30), node.log_text()
    base = wait_url(node)
    iface = pf_netdev(0)
    r0 = {"resource": resource(0)}
    with ns.entered():  # the supervisor's loopback is the namespace's
        wait_samples(
            base,
            lambda s: value(s, "sriovdp_link_up", interface=iface) == 1,
            what=f"{iface} up",
        )
        ns.ip("link", "set", iface, "down")
        samples = wait_samples(
            base,
            lambda s: (
                value(s, "sriovdp_link_up", interface=iface) == 0
                and value(s, "sriovdp_pool_devices_healthy", **r0) == 0
            ),
            what=f"{iface} down and its VFs unhealthy",
        )
        assert value(samples, "sriovdp_link_operstate", interface=iface, operstate="DOWN") == 1
        assert value(samples, "sriovdp_link_up", interface=pf_netdev(1)) == 1
        assert value(samples, "sriovdp_pool_devices_healthy", resource=resource(1)) == 4

        # a link that flapped after the kubelet chose the device: allocated, and counted
        assert k.allocate(resource(0), [sorted(node.vfs(0))[0]]).envs
        samples = wait_samples(
            base,
            lambda s: value(s, "sriovdp_allocate_unhealthy_requests_total", **r0) == 1,
            what="the allocation of an unhealthy device counted",
        )
        assert value(samples, "sriovdp_allocate_requests_total", outcome="ok", **r0) == 1

        ns.ip("link", "set", iface, "up")
        wait_samples(
            base,
            lambda s: value(s, "sriovdp_pool_devices_healthy", **r0) == 4,
            what="healthy again",
        )


def test_no_metrics_starts_no_metrics_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRIOV_DP_METRICS", "false")
    node = SimNode(1, 2)
    try:
        node.start_supervisor()
        assert node.stand_in().wait_for(node.all_registered(), 30), node.log_text()
        assert "metrics" not in node.rows()
        assert node.metrics_url() is None
    finally:
        node.close()


def test_scrape_text_is_plain_prometheus_unless_openmetrics_is_asked(node: SimNode) -> None:
    base = _ready(node)
    status, ctype, body = get(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    assert scrape(base)  # parses
    assert "# EOF" not in body
    assert get(base + "/nope")[0] == 404


def _attack(host: str, port: int, stop: threading.Event) -> None:
    """Slowloris, huge headers and random bytes, over and over, until ``stop``."""
    held: list[socket.socket] = []
    try:
        while not stop.is_set():
            for payload in (
                b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 70_000,
                os.urandom(2048),
            ):
                with contextlib.suppress(OSError), socket.create_connection((host, port), 2) as s:
                    s.sendall(payload)
            with contextlib.suppress(OSError):
                slow = socket.create_connection((host, port), 2)
                slow.sendall(b"GET /metrics HTTP/1.1\r\nX-a: ")
                held.append(slow)
            if len(held) > 40:
                held.pop(0).close()
    finally:
        for s in held:
            s.close()


def _answers(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(url)[0] == 200:
                return True
        time.sleep(0.1)
    return False


def test_hostile_http_never_touches_the_pools(node: SimNode) -> None:
    base = _ready(node)
    k = node.stand_in()
    host, port = base.removeprefix("http://").rsplit(":", 1)
    lists = {p: k.lists_received(resource(p)) for p in range(node.pfs)}
    stop = threading.Event()
    attackers = [
        threading.Thread(target=_attack, args=(host, int(port), stop), daemon=True)
        for _ in range(4)
    ]
    for t in attackers:
        t.start()
    try:
        slowest = 0.0
        for i in range(300):
            started = time.perf_counter()
            k.allocate(resource(i % 2), [sorted(node.vfs(i % 2))[i % 4]])
            slowest = max(slowest, time.perf_counter() - started)
    finally:
        stop.set()
        for t in attackers:
            t.join(10)
    assert slowest < 0.5  # generous: a loaded CI box, but never a stall behind HTTP
    # the attackers' last connections hold the endpoint's slots until their 5 s deadline
    assert _answers(base + "/healthz", 20), "the endpoint never recovered after the attack"
    assert {p: k.lists_received(resource(p)) for p in range(node.pfs)} == lists  # no re-list
    assert all(k.connected(resource(p)) for p in range(node.pfs))
    samples = wait_samples(
        base,
        lambda s: (
            value(s, "sriovdp_allocate_requests_total", outcome="ok", resource=resource(0)) == 150
        ),
        what="every allocation counted",
    )
    metrics = {"child": "metrics", "role": "metrics"}
    assert value(samples, "sriovdp_child_restarts_total", **metrics) == 0
    assert get(base + "/healthz")[0] == 200
