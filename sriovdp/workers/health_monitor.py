"""Health monitor process: owns the netlink link socket and the table of link states.

``python -m sriovdp.workers health-monitor --name N --run-dir R``. Reads link events with pyroute2
(its ``IPRSocket``; :mod:`sriovdp.workers.netlink` says why that class). Joins ``RTMGRP_LINK``
first, then dumps every link and publishes each one's full state as a retained
:class:`~sriovdp.shared.messages.LinkState` on ``link.<ifname>.state``; afterwards it publishes
each change as it arrives (identical states are not repeated). A removed link is published with
``present=false``; a renamed one as its old name gone and its new name present.

Recovery: a netlink overflow (``ENOBUFS``) or any other socket error closes the socket, opens a new
one, dumps again and republishes everything (counted in :class:`MonitorStats`). The first reopen is
immediate; further failures before a dump completes wait :meth:`BackoffPolicy.delay` (a storm that
keeps overflowing the buffer is not answered with back-to-back full dumps). Every
``--republish-interval`` seconds a fresh dump is taken and every state republished, which heals a
lost bus message or a missed kernel event. Retained states left on the bus by an earlier instance
for links that no longer exist are corrected to ``present=false`` at start.

Kernel uevents (driver bind/unbind, VFs created or removed, netdevs renamed) are read in a thread
of their own (:mod:`sriovdp.workers.uevents`) and published as ``device.<subsystem>.<name>``
:class:`~sriovdp.shared.messages.DeviceEvent` messages, on which pools rescan at once.

The loop blocks in ``poll()`` on the netlink socket, the bus, the uevent hand-over pipe and a
signal wake-up pipe, with timeouts of seconds, so an idle monitor costs nothing. SIGTERM or
SIGINT: exit 0 at once.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import zmq

from sriovdp.launch import runtime
from sriovdp.shared import logs
from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.shared.bus import BusClient
from sriovdp.shared.messages import LinkState, Message, WorkerHeartbeat, WorkerReady
from sriovdp.workers.netlink import DEFAULT_RCVBUF, NOT_PRESENT, DumpDone, LinkSocket
from sriovdp.workers.uevents import UeventReader

log = logging.getLogger(__name__)

DEFAULT_REPUBLISH_INTERVAL = 30.0
DEFAULT_HEARTBEAT_INTERVAL = 2.0
#: how long after start a retained state of an earlier instance is still checked against the table
STALE_CHECK_WINDOW = 10.0
#: how many periodic republishes a removed link's ``present=false`` state is repeated before the
#: table forgets it (pod veths come and go; the table must not grow forever)
TOMBSTONE_CYCLES = 2
#: delays between reopen attempts after the first, immediate one (a dump completing resets it)
REOPEN_BACKOFF = BackoffPolicy(base=0.25, cap=5.0)


class Publisher(Protocol):
    def publish(self, message: Message) -> None: ...


class LinkSource(Protocol):
    """What the monitor needs of a netlink socket (the seam tests use to inject failures)."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...
    def request_dump(self) -> int: ...
    def read(self, max_datagrams: int = 64) -> Sequence[object]: ...


@dataclass(slots=True)
class MonitorStats:
    dumps: int = 0
    interrupted_dumps: int = 0
    overflows: int = 0
    socket_errors: int = 0
    events: int = 0
    published: int = 0


class LinkTable:
    """Last published state per interface name, with the ifindex -> name map for renames.

    :meth:`apply` returns the states to publish for one kernel fact (none when nothing changed).
    Removed links stay as tombstones (``present=false``) for a few republish cycles.
    """

    def __init__(self) -> None:
        self._states: dict[str, LinkState] = {}
        self._names: dict[int, str] = {}
        self._tombstone_age: dict[str, int] = {}

    def states(self) -> list[LinkState]:
        return list(self._states.values())

    def get(self, ifname: str) -> LinkState | None:
        return self._states.get(ifname)

    def present_indexes(self) -> set[int]:
        return {s.ifindex for s in self._states.values() if s.present}

    def apply(
        self, ifname: str, ifindex: int, operstate: str, carrier: bool, present: bool
    ) -> list[LinkState]:
        out: list[LinkState] = []
        if present:
            old_name = self._names.get(ifindex)
            if old_name is not None and old_name != ifname:  # renamed: the old name is gone
                out += self._set(LinkState(old_name, ifindex, NOT_PRESENT, False, False))
            self._names[ifindex] = ifname
            current = self._states.get(ifname)
            if current is not None and current.present and current.ifindex != ifindex:
                # the name now belongs to another link; the old link's index is stale
                self._names.pop(current.ifindex, None)
        else:
            current = self._states.get(ifname)
            if current is not None and current.present and current.ifindex != ifindex:
                return out  # removal of an older link that had this name; the current one stays
            self._names.pop(ifindex, None)
        out += self._set(LinkState(ifname, ifindex, operstate, carrier, present))
        return out

    def remove_index(self, ifindex: int) -> list[LinkState]:
        name = self._names.get(ifindex)
        if name is None:
            return []
        return self.apply(name, ifindex, NOT_PRESENT, False, False)

    def _set(self, state: LinkState) -> list[LinkState]:
        if self._states.get(state.ifname) == state:
            return []
        self._states[state.ifname] = state
        if state.present:
            self._tombstone_age.pop(state.ifname, None)
        else:
            self._tombstone_age[state.ifname] = 0
        return [state]

    def age_tombstones(self) -> None:
        """One republish cycle passed: forget tombstones repeated often enough."""
        for name in list(self._tombstone_age):
            self._tombstone_age[name] += 1
            if self._tombstone_age[name] > TOMBSTONE_CYCLES:
                del self._tombstone_age[name]
                self._states.pop(name, None)


class HealthMonitor:
    """The monitor's state machine, driven by :meth:`on_readable` and :meth:`on_tick`.

    Socket, bus and clock are injected; :func:`main` wires them to a poll loop.
    """

    def __init__(
        self,
        name: str,
        source: LinkSource,
        bus: Publisher,
        republish_interval: float = DEFAULT_REPUBLISH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.stats = MonitorStats()
        self.table = LinkTable()
        self.ready = False
        self._source = source
        self._bus = bus
        self._clock = clock
        self._republish_interval = republish_interval
        self._open = False
        self._reopen_at = 0.0
        self._failures = 0  # socket errors and failed opens since the last complete dump
        self._dump_seq: int | None = None
        self._dump_seen: set[int] = set()
        self._dump_republish = False
        self._next_republish = clock() + republish_interval
        self._stale_names: set[str] = set()

    # --- socket lifecycle -------------------------------------------------------------------

    def fileno(self) -> int | None:
        return self._source.fileno() if self._open else None

    def start(self) -> None:
        self._reopen("start", republish=False)

    def _reopen(self, reason: str, republish: bool) -> None:
        self._source.close()
        self._open = False
        self._dump_seq = None
        try:
            self._source.open()
            self._open = True
            self._request_dump(republish)
        except OSError as exc:
            delay = self._close_after_failure()
            log.error(
                "netlink socket could not be opened (%s): %s; retry in %.2f s", reason, exc, delay
            )

    def _close_after_failure(self) -> float:
        """Closes the socket and schedules the next open: at once after the first failure since
        the last complete dump, then after :data:`REOPEN_BACKOFF` delays. Returns the delay."""
        self._source.close()
        self._open = False
        self._dump_seq = None
        self._failures += 1
        delay = 0.0 if self._failures == 1 else REOPEN_BACKOFF.delay(self._failures - 1)
        self._reopen_at = self._clock() + delay
        return delay

    def _request_dump(self, republish: bool) -> None:
        self._dump_seq = self._source.request_dump()
        self._dump_seen = set()
        self._dump_republish = republish
        self.stats.dumps += 1

    def _fail(self, exc: OSError) -> None:
        if exc.errno == errno.ENOBUFS:
            self.stats.overflows += 1
            log.warning(
                "netlink overflow (ENOBUFS), events were lost: reopening and dumping again "
                "(overflows=%d)",
                self.stats.overflows,
            )
        else:
            self.stats.socket_errors += 1
            log.warning(
                "netlink socket error: %s: reopening and dumping again (socket_errors=%d)",
                exc,
                self.stats.socket_errors,
            )
        if self._close_after_failure() == 0.0:
            self._reopen("error", republish=True)

    # --- events --------------------------------------------------------------------------------

    def on_readable(self) -> None:
        """Reads and applies everything waiting on the netlink socket."""
        if not self._open:
            return
        try:
            items = self._source.read()
        except OSError as exc:
            self._fail(exc)
            return
        for item in items:
            self._apply(item)

    def _apply(self, item: object) -> None:
        if isinstance(item, LinkState):
            self.stats.events += 1
            if self._dump_seq is not None:
                self._dump_seen.add(item.ifindex)
            for state in self.table.apply(
                item.ifname, item.ifindex, item.operstate, item.carrier, item.present
            ):
                self._publish(state)
        elif isinstance(item, DumpDone) and item.seq == self._dump_seq:
            if item.interrupted:  # the link list changed while the kernel walked it
                self.stats.interrupted_dumps += 1
                self._request_dump(self._dump_republish)
                return
            self._finish_dump()

    def _finish_dump(self) -> None:
        self._dump_seq = None
        self._failures = 0
        for ifindex in self.table.present_indexes() - self._dump_seen:
            for state in self.table.remove_index(ifindex):
                self._publish(state)
        if self._dump_republish:
            for state in self.table.states():
                self._publish(state)
            self.table.age_tombstones()
        for name in sorted(self._stale_names):
            self._correct_stale(name)
        self._stale_names.clear()
        if not self.ready:
            self.ready = True
            self._bus.publish(WorkerReady(self.name, os.getpid()))
            runtime.release_memory()  # the first dump's decoding garbage
            log.info("first link dump published", extra={"links": len(self.table.states())})

    def on_stale_state(self, state: LinkState) -> None:
        """A retained state published by an earlier instance (before this one started)."""
        if self.ready:
            self._correct_stale(state.ifname)
        else:
            self._stale_names.add(state.ifname)

    def _correct_stale(self, ifname: str) -> None:
        if self.table.get(ifname) is None:  # a link that vanished while no monitor ran
            for state in self.table.apply(ifname, 0, NOT_PRESENT, False, False):
                self._publish(state)

    def _publish(self, state: LinkState) -> None:
        self.stats.published += 1
        self._bus.publish(state)

    def on_tick(self) -> None:
        """Timers: reopen after a failure, periodic dump with full republish."""
        now = self._clock()
        if not self._open and now >= self._reopen_at:
            self._reopen("retry", republish=True)
        if now >= self._next_republish:
            self._next_republish = now + self._republish_interval
            if self._open and self._dump_seq is None:
                try:
                    self._request_dump(republish=True)
                except OSError as exc:
                    self._fail(exc)

    def next_deadline(self) -> float:
        deadline = self._next_republish
        if not self._open:
            deadline = min(deadline, self._reopen_at)
        return deadline

    def close(self) -> None:
        self._source.close()
        self._open = False


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.infra_arg_parser("health-monitor", DEFAULT_HEARTBEAT_INTERVAL)
    parser.add_argument(
        "--republish-interval",
        type=float,
        default=DEFAULT_REPUBLISH_INTERVAL,
        help="seconds between full dumps republishing every link (default %(default)s)",
    )
    parser.add_argument(
        "--rcvbuf", type=int, default=0, help="netlink receive buffer in bytes (0: default)"
    )
    return parser


#: built at import, so a process forked after the import (a zygote that preloads this module)
#: only parses
PARSER = build_parser()


def parse_args(argv: list[str]) -> argparse.Namespace:
    return PARSER.parse_args(argv)


def main(argv: list[str]) -> int:
    """Runs the health monitor until SIGTERM/SIGINT; returns the exit code."""
    runtime.die_with_parent()
    args = parse_args(argv)
    logs.setup(args.name, args.log_level, args.log_format)
    runtime.name_process("sriov-dp health-monitor", "sdp-healthmon")
    stop = runtime.StopFlag()
    stop.install(signal.SIGTERM, signal.SIGINT)

    started_ns = time.monotonic_ns()
    bus = BusClient(args.run_dir, args.name, subscribe=["link."])
    source = LinkSocket(args.rcvbuf or DEFAULT_RCVBUF)
    monitor = HealthMonitor(args.name, source, bus, args.republish_interval)
    hb_interval = max(0.1, args.heartbeat_interval)
    stale_check_until = time.monotonic() + STALE_CHECK_WINDOW
    uevents = UeventReader()
    poller = zmq.Poller()
    poller.register(stop.fileno(), zmq.POLLIN)
    poller.register(bus.sub_socket, zmq.POLLIN)
    poller.register(uevents.fileno(), zmq.POLLIN)
    polled_fd: int | None = None
    try:
        monitor.start()
        uevents.start()
        next_hb = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_hb:
                bus.publish(WorkerHeartbeat(args.name, os.getpid()))
                next_hb = now + hb_interval
            if stale_check_until and now >= stale_check_until:
                bus.sub_socket.setsockopt(zmq.UNSUBSCRIBE, b"link.")
                stale_check_until = 0.0
            fd = monitor.fileno()  # changes when the socket was reopened (or is closed)
            if fd != polled_fd:
                if polled_fd is not None:
                    poller.unregister(polled_fd)
                if fd is not None:
                    poller.register(fd, zmq.POLLIN)
                polled_fd = fd
            deadline = min(next_hb, monitor.next_deadline())
            if stale_check_until:
                deadline = min(deadline, stale_check_until)
            timeout_ms = max(0, int((deadline - time.monotonic()) * 1000) + 1)
            ready = dict(poller.poll(timeout_ms))
            if fd is not None and fd in ready:
                monitor.on_readable()
            if bus.sub_socket in ready:
                _drain_bus(bus, monitor, started_ns)
            if uevents.fileno() in ready:
                for event in uevents.take():
                    bus.publish(event)
            if stop.fileno() in ready:
                stop.drain()
            monitor.on_tick()
    finally:
        monitor.close()
        bus.close()
        stop.close()
    s = monitor.stats
    log.info(
        "stopping (dumps=%d overflows=%d socket_errors=%d published=%d)",
        s.dumps,
        s.overflows,
        s.socket_errors,
        s.published,
        extra={"signal": stop.signal},
    )
    return 0


def _drain_bus(bus: BusClient, monitor: HealthMonitor, started_ns: int) -> None:
    for _ in range(256):
        env = bus.receive_ready()
        if env is None:
            if not bus.sub_socket.poll(0):
                return
            continue
        # our own messages carry seqs from after our start; older ones are an earlier instance's
        if isinstance(env.message, LinkState) and env.seq < started_ns and env.message.present:
            monitor.on_stale_state(env.message)
