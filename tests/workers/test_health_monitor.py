"""Health monitor: link table logic with fakes, then the real process on real kernel events.

The process tests run ``python -m sriovdp.workers health-monitor`` inside a fresh network
namespace with veth pairs, toggle links with iproute2 and read the LinkState messages from the bus.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sriovdp.shared.messages import LinkState, Message, WorkerHeartbeat, WorkerReady
from sriovdp.workers.health_monitor import (
    REOPEN_BACKOFF,
    TOMBSTONE_CYCLES,
    HealthMonitor,
    LinkTable,
    parse_args,
)
from sriovdp.workers.netlink import NOT_PRESENT, DumpDone
from tests.harness.broker import BrokerThread
from tests.harness.netns import NetNS
from tests.workers.conftest import Listener, Proc, worker_argv

pytestmark = pytest.mark.timeout(60)

# --- link table and monitor logic, with a fake netlink socket -----------------------------------


def _up(name: str, index: int) -> LinkState:
    return LinkState(name, index, "UP", True, True)


def test_options_parse_alike_with_the_parser_built_once(tmp_path: Path) -> None:
    tuned = parse_args(["--run-dir", str(tmp_path), "--rcvbuf", "1", "--name", "hm"])
    plain = parse_args(["--run-dir", str(tmp_path)])
    assert (tuned.rcvbuf, tuned.name) == (1, "hm")
    assert (plain.rcvbuf, plain.name, plain.republish_interval) == (0, "health-monitor", 30.0)
    with pytest.raises(SystemExit):
        parse_args(["--rcvbuf", "1"])  # --run-dir is required


def test_table_dedupes_identical_states() -> None:
    table = LinkTable()
    assert table.apply("pf0", 5, "UP", True, True) == [LinkState("pf0", 5, "UP", True, True)]
    assert table.apply("pf0", 5, "UP", True, True) == []
    assert table.apply("pf0", 5, "DOWN", False, True) == [LinkState("pf0", 5, "DOWN", False, True)]


def test_table_rename_publishes_old_name_gone_and_new_name_present() -> None:
    table = LinkTable()
    table.apply("pf0", 5, "UP", True, True)
    assert table.apply("uplink", 5, "UP", True, True) == [
        LinkState("pf0", 5, NOT_PRESENT, False, False),
        LinkState("uplink", 5, "UP", True, True),
    ]


def test_table_ignores_removal_of_an_older_link_with_the_same_name() -> None:
    table = LinkTable()
    table.apply("pf0", 5, "UP", True, True)
    table.apply("pf0", 9, "UP", True, True)  # recreated under a new index before the DELLINK
    assert table.apply("pf0", 5, NOT_PRESENT, False, False) == []
    assert table.get("pf0") == LinkState("pf0", 9, "UP", True, True)


def test_table_forgets_tombstones_after_a_few_cycles() -> None:
    table = LinkTable()
    table.apply("veth9", 3, "UP", True, True)
    table.apply("veth9", 3, NOT_PRESENT, False, False)
    for _ in range(TOMBSTONE_CYCLES):
        table.age_tombstones()
        assert table.get("veth9") is not None
    table.age_tombstones()
    assert table.get("veth9") is None


class FakeSource:
    """A LinkSource whose reads are scripted; ``fail`` raises an OSError at the next read,
    ``refuse_open`` at the next opens."""

    def __init__(self) -> None:
        self.opened = 0
        self.seq = 0
        self.pending: list[object] = []
        self.fail: OSError | None = None
        self.refuse_open = 0
        self.links: dict[int, LinkState] = {}

    def open(self) -> None:
        if self.refuse_open:
            self.refuse_open -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        self.opened += 1

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def request_dump(self) -> int:
        self.seq += 1
        self.pending += [*self.links.values(), DumpDone(self.seq, False)]
        return self.seq

    def read(self, max_datagrams: int = 64) -> Sequence[object]:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        out, self.pending = self.pending, []
        return out


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def publish(self, message: Message) -> None:
        self.sent.append(message)

    def links(self) -> list[LinkState]:
        return [m for m in self.sent if isinstance(m, LinkState)]


def _monitor(clock: Callable[[], float] = lambda: 0.0) -> tuple[HealthMonitor, FakeSource, FakeBus]:
    source, bus = FakeSource(), FakeBus()
    source.links = {1: _up("pf0", 1), 2: _up("pf1", 2)}
    return HealthMonitor("hm", source, bus, republish_interval=30, clock=clock), source, bus


def test_ready_only_after_the_first_full_dump() -> None:
    monitor, _source, bus = _monitor()
    monitor.start()
    assert bus.sent == []
    monitor.on_readable()
    assert [m.ifname for m in bus.links()] == ["pf0", "pf1"]
    assert isinstance(bus.sent[-1], WorkerReady)


def test_overflow_reopens_dumps_again_and_republishes_everything() -> None:
    monitor, source, bus = _monitor()
    monitor.start()
    monitor.on_readable()
    bus.sent.clear()
    # while events were lost, pf1 went down and pf0 was deleted
    source.links = {2: LinkState("pf1", 2, "DOWN", False, True)}
    source.fail = OSError(errno.ENOBUFS, "No buffer space available")
    monitor.on_readable()
    assert monitor.stats.overflows == 1
    assert source.opened == 2
    monitor.on_readable()
    latest = {s.ifname: s for s in bus.links()}
    assert latest["pf1"] == LinkState("pf1", 2, "DOWN", False, True)
    assert latest["pf0"].present is False
    assert not any(isinstance(m, WorkerReady) for m in bus.sent)  # ready once per process


def test_other_socket_errors_are_counted_apart() -> None:
    monitor, source, _bus = _monitor()
    monitor.start()
    monitor.on_readable()
    source.fail = OSError(errno.EBADF, "Bad file descriptor")
    monitor.on_readable()
    assert (monitor.stats.overflows, monitor.stats.socket_errors) == (0, 1)
    assert source.opened == 2


def test_failures_before_a_complete_dump_back_off_and_a_dump_resets_them() -> None:
    now = [0.0]
    monitor, source, _bus = _monitor(lambda: now[0])
    monitor.start()
    monitor.on_readable()
    source.fail = OSError(errno.ENOBUFS, "No buffer space available")
    source.refuse_open = 3
    monitor.on_readable()  # the first failure: reopened at once (and the open fails)
    assert (monitor.stats.overflows, source.opened, monitor.fileno()) == (1, 1, None)
    waits = []
    for _ in range(3):  # each failed open waits longer, as REOPEN_BACKOFF says
        waits.append(monitor.next_deadline() - now[0])
        now[0] = monitor.next_deadline()
        monitor.on_tick()
    assert source.opened == 2 and monitor.fileno() == 99
    for attempt, wait in enumerate(waits, start=1):
        low = REOPEN_BACKOFF.delay(attempt, lambda: 1.0)
        assert low <= wait <= REOPEN_BACKOFF.delay(attempt, lambda: 0.0)
    assert waits[0] < waits[1] < waits[2]
    monitor.on_readable()  # the dump completes: the next failure reopens at once again
    source.fail = OSError(errno.ENOBUFS, "No buffer space available")
    monitor.on_readable()
    assert (monitor.stats.overflows, source.opened) == (2, 3)


def test_periodic_republish_dumps_and_sends_every_state_again() -> None:
    now = [0.0]
    monitor, _source, bus = _monitor(lambda: now[0])
    monitor.start()
    monitor.on_readable()
    bus.sent.clear()
    monitor.on_tick()
    monitor.on_readable()
    assert bus.sent == []
    now[0] = 31.0
    monitor.on_tick()
    monitor.on_readable()
    assert sorted(s.ifname for s in bus.links()) == ["pf0", "pf1"]


def test_stale_retained_state_of_a_vanished_link_is_corrected() -> None:
    monitor, _source, bus = _monitor()
    monitor.start()
    monitor.on_stale_state(LinkState("gone0", 7, "UP", True, True))  # replayed before the dump
    monitor.on_stale_state(LinkState("pf0", 1, "DOWN", False, True))
    monitor.on_readable()
    latest = {s.ifname: s for s in bus.links()}
    assert latest["gone0"].present is False
    assert latest["pf0"] == LinkState("pf0", 1, "UP", True, True)


# --- the real process in a network namespace -----------------------------------------------------


def _start(netns: NetNS, run_dir: Path, procs: list[Proc], *extra: str) -> Proc:
    log_path = run_dir / f"hm-{len(procs)}.log"
    with log_path.open("wb") as err:
        popen = netns.popen(worker_argv("health-monitor", "hm", run_dir, *extra), stderr=err)
    proc = Proc(popen, log_path)
    procs.append(proc)
    return proc


def _matches_kernel(listener: Listener, netns: NetNS, names: Sequence[str]) -> Callable[[], bool]:
    def check() -> bool:
        kernel = netns.kernel_links()
        for name in names:
            state = listener.link(name)
            if state is None or not state.present:
                return False
            if (state.operstate, state.carrier) != kernel[name]:
                return False
        return True

    return check


def _ready(listener: Listener) -> Callable[[], bool]:
    return lambda: any(isinstance(m, WorkerReady) for m in listener.of_kind(WorkerReady))


@pytest.mark.root
def test_initial_dump_then_down_up_and_carrier(
    netns: NetNS, broker: BrokerThread, listen: Callable[..., Listener], procs: list[Proc]
) -> None:
    netns.add_veth("pf0", "pf0p")
    netns.add_veth("pf1", "pf1p")
    netns.add_veth("pf2", "pf2p", up=False)
    listener = listen("link.", "worker.hm.")
    proc = _start(netns, broker.run_dir, procs)
    assert listener.wait_until(_ready(listener)), proc.log()
    assert listener.link("pf0") == LinkState("pf0", listener.link("pf0").ifindex, "UP", True, True)  # type: ignore[union-attr]
    assert listener.link("pf2") is not None
    assert listener.link("pf2").operstate == "DOWN"  # type: ignore[union-attr]
    assert listener.link("lo") is not None
    # every link of the dump was published before READY
    ready_at = next(i for i, e in enumerate(listener.seen) if isinstance(e.message, WorkerReady))
    before = {
        e.message.ifname for e in listener.seen[:ready_at] if isinstance(e.message, LinkState)
    }
    assert {"lo", "pf0", "pf0p", "pf1", "pf1p", "pf2", "pf2p"} <= before

    netns.ip("link", "set", "pf0", "down")
    assert listener.wait_until(lambda: listener.link("pf0").operstate == "DOWN")  # type: ignore[union-attr]
    assert not listener.link("pf0").healthy  # type: ignore[union-attr]
    assert listener.link("pf1").healthy  # type: ignore[union-attr]
    netns.ip("link", "set", "pf0", "up")
    assert listener.wait_until(lambda: listener.link("pf0").healthy)  # type: ignore[union-attr]

    # the peer going down takes the carrier away: LOWERLAYERDOWN, carrier false
    netns.ip("link", "set", "pf1p", "down")
    assert listener.wait_until(lambda: not listener.link("pf1").carrier)  # type: ignore[union-attr]
    assert listener.link("pf1").operstate == "LOWERLAYERDOWN"  # type: ignore[union-attr]
    assert listener.link("pf1").present  # type: ignore[union-attr]
    netns.ip("link", "set", "pf1p", "up")
    assert listener.wait_until(lambda: listener.link("pf1").healthy)  # type: ignore[union-attr]
    assert any(isinstance(m, WorkerHeartbeat) for m in listener.of_kind(WorkerHeartbeat))
    assert proc.terminate() == 0


@pytest.mark.root
def test_deletion_and_rename(
    netns: NetNS, broker: BrokerThread, listen: Callable[..., Listener], procs: list[Proc]
) -> None:
    netns.add_veth("pf0", "pf0p")
    netns.add_veth("pf1", "pf1p")
    listener = listen("link.", "worker.hm.")
    proc = _start(netns, broker.run_dir, procs)
    assert listener.wait_until(_ready(listener)), proc.log()
    index = listener.link("pf0").ifindex  # type: ignore[union-attr]
    netns.ip("link", "del", "pf0")  # takes its peer with it
    assert listener.wait_until(lambda: not listener.link("pf0").present)  # type: ignore[union-attr]
    assert listener.wait_until(lambda: not listener.link("pf0p").present)  # type: ignore[union-attr]
    assert listener.link("pf0").ifindex == index  # type: ignore[union-attr]

    netns.ip("link", "set", "pf1", "down")
    netns.ip("link", "set", "pf1", "name", "uplink1")
    netns.ip("link", "set", "uplink1", "up")
    assert listener.wait_until(lambda: listener.link("uplink1") is not None)
    assert listener.wait_until(lambda: listener.link("uplink1").healthy)  # type: ignore[union-attr]
    assert listener.link("pf1").present is False  # type: ignore[union-attr]
    assert proc.terminate() == 0


def _toggle_commands(names: Sequence[str], count: int) -> list[str]:
    """``count`` down/up commands spread over the links, ending in a mixed state."""
    commands = []
    for i in range(count):
        name = names[i % len(names)]
        commands.append(f"link set {name} {'down' if (i // len(names)) % 2 == 0 else 'up'}")
    return commands


@pytest.mark.root
def test_1000_rapid_toggles_end_in_the_kernel_state(
    netns: NetNS, broker: BrokerThread, listen: Callable[..., Listener], procs: list[Proc]
) -> None:
    names = [f"pf{i}" for i in range(5)]
    for name in names:
        netns.add_veth(name, f"{name}p")
    listener = listen("link.", "worker.hm.")
    proc = _start(netns, broker.run_dir, procs)
    assert listener.wait_until(_ready(listener)), proc.log()
    # 1000 toggles, then a peer down and some links left down so the end state is mixed
    netns.batch([*_toggle_commands(names, 1003), "link set pf4p down"])

    def mixed() -> bool:  # the kernel sets operstate UP asynchronously (linkwatch)
        return {netns.kernel_links()[n][0] for n in names} >= {"UP", "DOWN"}

    assert listener.wait_until(mixed), netns.kernel_links()
    kernel = netns.kernel_links()
    assert listener.wait_until(_matches_kernel(listener, netns, names)), (kernel, proc.log())
    assert proc.terminate() == 0


@pytest.mark.root
def test_killed_mid_flapping_a_new_monitor_converges(
    netns: NetNS, broker: BrokerThread, listen: Callable[..., Listener], procs: list[Proc]
) -> None:
    names = [f"pf{i}" for i in range(4)]
    for name in names:
        netns.add_veth(name, f"{name}p")
    netns.add_veth("doomed0", "doomed0p")
    first = _start(netns, broker.run_dir, procs)
    listener = listen("link.", "worker.hm.")
    assert listener.wait_until(lambda: listener.link("doomed0") is not None), first.log()
    flapper = subprocess.Popen(
        ["ip", "-n", netns.name, "-batch", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert flapper.stdin is not None
    for command in _toggle_commands(names, 600):
        flapper.stdin.write(f"{command}\n".encode())
    flapper.stdin.flush()
    first.kill()  # SIGKILL while the flapping goes on
    for command in _toggle_commands(names, 401):
        flapper.stdin.write(f"{command}\n".encode())
    flapper.stdin.write(b"link del doomed0\n")  # vanishes while no monitor runs
    flapper.stdin.close()
    assert flapper.wait(30) == 0
    second = _start(netns, broker.run_dir, procs)
    late = listen("link.")  # a consumer that joins now learns only the retained states
    assert listener.wait_until(_matches_kernel(listener, netns, names)), second.log()
    assert listener.wait_until(lambda: not listener.link("doomed0").present)  # type: ignore[union-attr]
    assert late.wait_until(_matches_kernel(late, netns, names)), second.log()
    assert late.wait_until(lambda: late.link("doomed0") is not None)
    assert late.wait_until(lambda: not late.link("doomed0").present)  # type: ignore[union-attr]
    assert second.terminate() == 0


@pytest.mark.root
def test_netlink_overflow_is_counted_and_recovered(
    netns: NetNS, broker: BrokerThread, listen: Callable[..., Listener], procs: list[Proc]
) -> None:
    names = [f"pf{i}" for i in range(4)]
    for name in names:
        netns.add_veth(name, f"{name}p")
    listener = listen("link.", "worker.hm.")
    # the smallest receive buffer the kernel allows: a handful of link messages fill it
    proc = _start(netns, broker.run_dir, procs, "--rcvbuf", "1")
    assert listener.wait_until(_ready(listener)), proc.log()
    os.kill(proc.popen.pid, signal.SIGSTOP)  # the monitor cannot read while the burst happens
    try:
        netns.batch([*_toggle_commands(names, 201), "link set pf2p down"])
    finally:
        os.kill(proc.popen.pid, signal.SIGCONT)
    assert listener.wait_until(_matches_kernel(listener, netns, names)), proc.log()
    assert listener.wait_until(lambda: "netlink overflow (ENOBUFS)" in proc.log()), proc.log()
    assert proc.terminate() == 0
    stopping = re.search(r"stopping \(dumps=(\d+) overflows=(\d+)", proc.log())
    assert stopping is not None, proc.log()
    assert int(stopping.group(1)) >= 2  # the first dump and at least one after the overflow
    assert int(stopping.group(2)) >= 1


@pytest.mark.root
def test_sigterm_exits_zero_without_links_changing(
    netns: NetNS, broker: BrokerThread, listen: Callable[..., Listener], procs: list[Proc]
) -> None:
    listener = listen("worker.hm.")
    proc = _start(netns, broker.run_dir, procs, "--republish-interval", "3600")
    assert listener.wait_until(_ready(listener)), proc.log()
    assert proc.terminate(timeout=5) == 0
