"""Metrics child: Prometheus metrics, ``/healthz`` and ``/readyz`` from the bus (metrics process).

``python -m sriovdp.workers metrics --name metrics --run-dir R --metrics-address HOST:PORT``.
Subscribes to every topic it turns into metrics (links, pools, workers, the supervisor's report)
and serves them over HTTP (:mod:`~sriovdp.workers.metrics.http`). One loop in the main thread
polls the bus, the listening socket and the stop pipe; each connection gets a short-lived thread.

READY after the first attempt to listen, successful or not: a port taken by something else must
not turn this child into a restart loop, nor touch any pool. The child retries with
``BackoffPolicy`` delays and publishes :class:`~sriovdp.shared.messages.MetricsEndpoint` on each
change, which ``status`` shows (and the log says once per distinct error).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time

import zmq
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sriovdp.launch import runtime
from sriovdp.shared import exitcodes, logs
from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import MetricsEndpoint, WorkerHeartbeat, WorkerReady
from sriovdp.workers.metrics.address import DEFAULT_METRICS_ADDRESS, split_address
from sriovdp.workers.metrics.collector import NodeCollector
from sriovdp.workers.metrics.http import BoundedHTTPServer, Response, Route, accept_ready
from sriovdp.workers.metrics.model import NodeView

log = logging.getLogger(__name__)

SUBSCRIPTIONS = ("link.", "pool.", "worker.", "supervisor.report")
#: a port taken at start is often freed soon (a previous pod ending): retry quickly at first
BIND_BACKOFF = BackoffPolicy(base=1.0, cap=30.0)
_TEXT = "text/plain; charset=utf-8"


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.infra_arg_parser("metrics", 15.0)
    parser.add_argument("--metrics-address", default=DEFAULT_METRICS_ADDRESS)
    return parser


class Endpoints:
    """The three routes over one :class:`NodeView`."""

    def __init__(self, view: NodeView) -> None:
        self.view = view
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(view))

    def routes(self) -> dict[str, Route]:
        return {"/metrics": self.metrics, "/healthz": self.healthz, "/readyz": self.readyz}

    def metrics(self, accept: str) -> Response:
        encoder, content_type = choose_encoder(accept)
        return 200, content_type, encoder(self.registry)

    def healthz(self, _accept: str) -> Response:
        with self.view.lock:
            live, why = self.view.live()
        return (200 if live else 503), _TEXT, f"{'ok' if live else 'not live'}: {why}\n".encode()

    def readyz(self, _accept: str) -> Response:
        with self.view.lock:
            ready, problems = self.view.ready()
        if ready:
            return 200, _TEXT, b"ok: every pool running and registered\n"
        return 503, _TEXT, ("not ready:\n" + "".join(f"  {p}\n" for p in problems)).encode()


class Listener:
    """The HTTP server once bound; binds again with backoff after a failure."""

    def __init__(self, address: str, endpoints: Endpoints) -> None:
        self.address = address
        self.host, self.port = split_address(address)
        self.endpoints = endpoints
        self.server: BoundedHTTPServer | None = None
        self.error = ""
        self.failures = 0
        self.next_try = 0.0

    def try_bind(self, now: float) -> bool:
        """One attempt; True when the endpoint's state changed (publish it)."""
        try:
            self.server = BoundedHTTPServer(self.host, self.port, self.endpoints.routes())
        except OSError as exc:
            self.failures += 1
            self.next_try = now + BIND_BACKOFF.delay(self.failures)
            error = f"cannot listen on {self.address}: {exc.strerror or exc}"
            changed, self.error = error != self.error, error
            if changed:
                log.error("%s; pools are not affected, retrying", error)
            return changed
        self.error, self.failures = "", 0
        log.info("serving /metrics, /healthz and /readyz on http://%s", self.server.bound())
        return True

    def message(self, name: str) -> MetricsEndpoint:
        return MetricsEndpoint(
            name=name,
            pid=os.getpid(),
            address=self.address,
            listening=self.server is not None,
            bound=self.server.bound() if self.server is not None else "",
            error=self.error,
        )

    def close(self) -> None:
        if self.server is not None:
            self.server.server_close()
            self.server = None


def main(argv: list[str]) -> int:
    """Runs the metrics child until SIGTERM/SIGINT; returns the exit code."""
    runtime.die_with_parent()
    args = build_parser().parse_args(argv)
    runtime.name_process("sriov-dp metrics", "sdp-metrics")
    logs.setup(args.name, args.log_level, args.log_format)
    try:
        split_address(args.metrics_address)
    except ValueError as exc:
        log.error("--metrics-address: %s", exc)
        return exitcodes.CHILD_CONFIG  # FATAL, not a restart loop
    stop = runtime.StopFlag()
    stop.install(signal.SIGTERM, signal.SIGINT)
    view = NodeView()
    listener = Listener(args.metrics_address, Endpoints(view))
    bus = BusClient(args.run_dir, args.name, subscribe=SUBSCRIPTIONS)
    try:
        listener.try_bind(time.monotonic())
        bus.publish(listener.message(args.name))
        bus.publish(WorkerReady(args.name, os.getpid()))
        runtime.release_memory()
        _loop(args, stop, bus, view, listener)
    finally:
        listener.close()
        bus.close()
        stop.close()
    log.info("stopping", extra={"signal": stop.signal})
    return 0


def _loop(
    args: argparse.Namespace,
    stop: runtime.StopFlag,
    bus: BusClient,
    view: NodeView,
    listener: Listener,
) -> None:
    poller = zmq.Poller()
    poller.register(bus.sub_socket, zmq.POLLIN)
    poller.register(stop.fileno(), zmq.POLLIN)
    polled_server: BoundedHTTPServer | None = None
    hb_interval = max(0.1, args.heartbeat_interval)
    next_hb = time.monotonic()
    while not stop.is_set():
        if listener.server is not polled_server and listener.server is not None:
            poller.register(listener.server.fileno(), zmq.POLLIN)
            polled_server = listener.server
        now = time.monotonic()
        if now >= next_hb:
            bus.publish(WorkerHeartbeat(args.name, os.getpid()))
            next_hb = now + hb_interval
        if listener.server is None and now >= listener.next_try:
            if listener.try_bind(now):
                bus.publish(listener.message(args.name))
            continue
        wake = next_hb if listener.server is not None else min(next_hb, listener.next_try)
        timeout_ms = max(0, int((wake - time.monotonic()) * 1000) + 1)
        for fd, _ in poller.poll(timeout_ms):
            if fd is bus.sub_socket:
                while (env := bus.receive_ready()) is not None:
                    view.apply(env)
            elif polled_server is not None and fd == polled_server.fileno():
                accept_ready(polled_server)
            elif fd == stop.fileno():
                stop.drain()
