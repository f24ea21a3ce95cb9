"""The chaos run (test process; shared by ``test_chaos.py`` and ``bench/bench_chaos.py``).

A :class:`~tests.integration.conftest.SimNode` (one pool per PF, the real supervisor, the kubelet
stand-in in this process). One client thread per pool allocates continuously through the
stand-in's connection to that pool (the kubelet's own channel), while the chaos loop, at random
intervals, SIGKILLs a random child (a plugin worker, the health monitor or the kubelet watcher)
or restarts the kubelet stand-in (every socket deleted, a new ``kubelet.sock``).

How a failed Allocate is judged, after the run, from the recorded events:

- *own kill*: its call overlapped the window from a SIGKILL of this pool's worker to the next
  registration of this pool (the pool was down; failing is expected);
- *kubelet restart*: its call overlapped the window from the start of a stand-in restart to this
  pool's registration in the new generation (the kubelet dropped every connection itself);
- *unexpected*: anything else. The test requires none.

An attempt is only made while the stand-in has an open connection to the pool (registered and
its ListAndWatch stream alive); otherwise it is counted as *unconnected*, as the kubelet would
not call a plugin it has no connection to. Time unregistered is sampled every 20 ms.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from tests.integration.conftest import PREFIX, SimNode, resource
from tests.reliability.procs import descendants

HEALTH = "health-monitor"
ZYGOTE = "zygote"
WATCHER = "kubelet-watcher"


def pool_child(p: int) -> str:
    return f"{PREFIX.replace('.', '-')}_pool{p}"


@dataclass
class Attempt:
    start: float
    end: float
    ok: bool
    error: str = ""


@dataclass
class PoolReport:
    resource: str
    attempted: int = 0
    ok: int = 0
    failed_own_kill: int = 0
    failed_kubelet_restart: int = 0
    failed_unexpected: int = 0
    unconnected: int = 0
    unregistered_s: float = 0.0
    kills: int = 0
    unexpected_errors: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "attempted": self.attempted,
            "ok": self.ok,
            "failed_own_kill": self.failed_own_kill,
            "failed_kubelet_restart": self.failed_kubelet_restart,
            "failed_unexpected": self.failed_unexpected,
            "unconnected": self.unconnected,
            "unregistered_s": round(self.unregistered_s, 2),
            "worker_kills": self.kills,
            "unexpected_errors": list(self.unexpected_errors),
        }


@dataclass
class ChaosReport:
    seconds: float
    pools: list[PoolReport]
    events: list[tuple[float, str]]
    seen_pids: set[int]

    @property
    def unexpected(self) -> int:
        return sum(p.failed_unexpected for p in self.pools)

    def table(self) -> str:
        head = (
            f"{'resource':<18}{'attempted':>10}{'ok':>8}{'own-kill':>9}{'kubelet':>8}"
            f"{'unexpected':>11}{'unconn':>8}{'unreg s':>9}{'kills':>6}"
        )
        lines = [head]
        for p in self.pools:
            lines.append(
                f"{p.resource:<18}{p.attempted:>10}{p.ok:>8}{p.failed_own_kill:>9}"
                f"{p.failed_kubelet_restart:>8}{p.failed_unexpected:>11}{p.unconnected:>8}"
                f"{p.unregistered_s:>9.2f}{p.kills:>6}"
            )
        kinds: dict[str, int] = {}
        for _, what in self.events:
            kind = what.split(" ", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        lines.append(f"events over {self.seconds:.0f} s: {kinds}")
        return "\n".join(lines)


def _next_reg(regs: list[tuple[float, int]], after: float, generation: int = 0) -> float:
    """When the pool registered next after ``after`` (in ``generation`` or later); inf if never."""
    return min((t for t, g in regs if t > after and g >= generation), default=float("inf"))


def _overlaps(start: float, end: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= w_end and end >= w_start for w_start, w_end in windows)


class Chaos:
    """One chaos run against a started, fully registered ``node``."""

    def __init__(
        self,
        node: SimNode,
        seconds: float,
        seed: int | None = None,
        pause: tuple[float, float] = (0.4, 1.2),
        client_pause: float = 0.03,
    ) -> None:
        self.node = node
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.pause = pause
        self.client_pause = client_pause
        self.stop = threading.Event()
        self.attempts: dict[int, list[Attempt]] = {p: [] for p in range(node.pfs)}
        self.unconnected: dict[int, int] = dict.fromkeys(range(node.pfs), 0)
        self.unregistered: dict[int, float] = dict.fromkeys(range(node.pfs), 0.0)
        self.kills: list[tuple[float, str, int]] = []  # (time, child, pid)
        self.restarts: list[tuple[float, int]] = []  # (start time, generation after)
        self.events: list[tuple[float, str]] = []
        self.seen: set[int] = set()

    # -- threads -----------------------------------------------------------------------------------

    def _client(self, p: int) -> None:
        k = self.node.stand_in()
        r = resource(p)
        ids = sorted(self.node.vfs(p))
        i = 0
        while not self.stop.is_set():
            if not k.connected(r):
                self.unconnected[p] += 1
                time.sleep(0.01)
                continue
            i += 1
            start = time.monotonic()
            try:
                # one pod per pool, allocated again and again: the checkpoint stays small
                k.allocate(r, [ids[i % len(ids)]], timeout=3.0, pod_uid=f"chaos-{p}")
                self.attempts[p].append(Attempt(start, time.monotonic(), True))
            except grpc.RpcError as exc:
                error = f"{exc.code().name}: {exc.details()}"
                self.attempts[p].append(Attempt(start, time.monotonic(), False, error))
            except (KeyError, ValueError) as exc:  # no connection yet / closed channel
                self.attempts[p].append(Attempt(start, time.monotonic(), False, repr(exc)))
            time.sleep(self.client_pause)

    def _monitor(self, supervisor_pid: int) -> None:
        k = self.node.stand_in()
        last = time.monotonic()
        next_walk = 0.0
        while not self.stop.is_set():
            time.sleep(0.02)
            now = time.monotonic()
            for p in range(self.node.pfs):
                if not k.connected(resource(p)):
                    self.unregistered[p] += now - last
            last = now
            if now >= next_walk:
                self.seen |= descendants(supervisor_pid)
                next_walk = now + 0.5

    # -- the run -----------------------------------------------------------------------------------

    def _act(self) -> None:
        roll = self.rng.random()
        if roll < 0.2:
            k = self.node.stand_in()
            start = time.monotonic()
            k.restart()
            self.restarts.append((start, k.generation))
            self.events.append((start, f"kubelet-restart gen {k.generation}"))
            return
        if roll < 0.3:
            name = HEALTH
        elif roll < 0.4:
            name = WATCHER
        elif roll < 0.5:
            name = ZYGOTE  # forks only: no pool may notice its death
        else:
            name = pool_child(self.rng.randrange(self.node.pfs))
        try:
            if name == ZYGOTE:
                pid = self.node.status()["supervisor"]["zygote"]["pid"]
            else:
                pid = self.node.rows()[name]["pid"]
        except Exception as exc:  # supervisor busy: skip this round, but say so
            self.events.append((time.monotonic(), f"skip status failed: {exc!r}"))
            return
        if not isinstance(pid, int):
            self.events.append((time.monotonic(), f"skip {name} has no pid"))
            return
        now = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.kills.append((now, name, pid))
        self.events.append((now, f"kill {name} pid {pid}"))

    def run(self) -> ChaosReport:
        assert self.node.proc is not None
        threads = [
            threading.Thread(target=self._client, args=(p,), daemon=True)
            for p in range(self.node.pfs)
        ]
        threads.append(
            threading.Thread(target=self._monitor, args=(self.node.proc.pid,), daemon=True)
        )
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(self.rng.uniform(*self.pause))
                self._act()
        finally:
            self.stop.set()
            for t in threads:
                t.join(10)
        return self.report()

    def report(self) -> ChaosReport:
        k = self.node.stand_in()
        reports = []
        for p in range(self.node.pfs):
            r = resource(p)
            regs = [(g.time, g.generation) for g in k.registrations if g.resource == r]

            own = [(t, _next_reg(regs, t)) for t, name, _ in self.kills if name == pool_child(p)]
            kube = [(t, _next_reg(regs, t, gen)) for t, gen in self.restarts]
            rep = PoolReport(r, unconnected=self.unconnected[p], kills=len(own))
            rep.unregistered_s = self.unregistered[p]
            for a in self.attempts[p]:
                rep.attempted += 1
                if a.ok:
                    rep.ok += 1
                elif _overlaps(a.start, a.end, own):
                    rep.failed_own_kill += 1
                elif _overlaps(a.start, a.end, kube):
                    rep.failed_kubelet_restart += 1
                else:
                    rep.failed_unexpected += 1
                    if len(rep.unexpected_errors) < 5:
                        rep.unexpected_errors.append(f"t={a.start:.3f}-{a.end:.3f} {a.error}")
            reports.append(rep)
        return ChaosReport(self.seconds, reports, sorted(self.events), set(self.seen))
