"""Entry point and main loop of a plugin worker (plugin worker process, one per resource pool).

``python -m sriovdp.workers plugin --name <child> ...`` (or ``main(argv)`` in a process forked
from the zygote: importing this or any module of the worker creates no gRPC, asyncio or ZeroMQ
object; all of them are made after the fork, when ``main`` runs).

The main thread owns the lifecycle: it discovers the pool, starts serving, starts the registrar,
then loops on an action queue fed by signal handlers, the bus thread and its own timers (heartbeat,
rescan, socket check). Nothing in the loop polls faster than a few seconds when idle.

Threads: ``MainThread`` (that loop, and the only one that sees signals); ``grpc-loop``, the
worker's one asyncio event loop (:class:`~sriovdp.workers.plugin.server.EventLoopThread`): the
``grpc.aio`` servers and every RPC handler, and the registrar's task with its Register calls
(:mod:`~sriovdp.workers.plugin.registration`); ``bus`` (on the bus only,
:class:`~sriovdp.workers.plugin.bus_link.BusLink`). Then the threads of libraries: grpcio's
``grpc.aio`` completion-queue poller (a Python thread blocked in C-core) and C-core's own
(``grpc_global_timer``, ``event_engine`` pool threads, ``lifeguard``), libzmq's I/O and reaper
threads. State changes made in ``bus`` or ``MainThread`` reach the streams through
:meth:`~sriovdp.workers.plugin.state.PoolState.add_waker`; the main thread drives servers and
registrar through the loop (``run_coroutine_threadsafe``, ``call_soon_threadsafe``).

Readiness (``WorkerReady``) is published once the server is serving and the first registration
attempt has completed, successful or not: a node whose kubelet is not up yet must not look like a
worker that cannot start (the supervisor would restart it in a loop); ``PoolSummary.registered``
tells whether the kubelet has us, and the registrar keeps retrying in the background.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from sriovdp.launch import runtime
from sriovdp.shared import exitcodes, logs, model, sysfs
from sriovdp.shared.messages import (
    KubeletSocketState,
    Message,
    PluginSocketDeleted,
    PoolSummary,
    WorkerHeartbeat,
    WorkerReady,
)

log = logging.getLogger("sriovdp.workers.plugin")

#: how often the main loop proves it is alive (and, without the bus, re-checks its socket and
#: kubelet.sock); the supervisor passes its heartbeat timeout / 3
DEFAULT_HEARTBEAT_S = 10.0
#: the sysfs fingerprint check (a safety net: netlink already reports new or vanished links);
#: a multiple of the heartbeat so both run in the same wake-up
DEFAULT_RESCAN_S = 30.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sriovdp.workers plugin",
        description="One resource pool's device plugin (v1beta1) for the kubelet.",
    )
    p.add_argument("--name", "--pool", dest="name", required=True, help="the pool's child name")
    p.add_argument("--config-file", default=model.DEFAULT_CONFIG_FILE)
    p.add_argument("--resource-prefix", default=model.DEFAULT_RESOURCE_PREFIX)
    p.add_argument("--plugin-dir", type=Path, default=Path(model.DEFAULT_PLUGIN_DIR))
    p.add_argument("--sysfs-root", type=Path, default=Path(model.DEFAULT_SYSFS_ROOT))
    p.add_argument("--proc-root", type=Path, default=Path("/proc"))
    p.add_argument("--devinfo-dir", type=Path, default=Path(model.DEFAULT_DEVINFO_DIR))
    p.add_argument("--cdi-dir", type=Path, default=Path(model.DEFAULT_CDI_DIR))
    p.add_argument("--use-cdi", action="store_true", help="answer Allocate with CDI device names")
    p.add_argument("--run-dir", type=Path, default=None, help="bus run dir; none: standalone")
    p.add_argument("--rescan-interval", type=float, default=DEFAULT_RESCAN_S, help="seconds")
    p.add_argument("--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_S, help="seconds")
    p.add_argument(
        "--register-backoff-max", type=float, default=5.0, help="cap of the retry delay, seconds"
    )
    p.add_argument(
        "--dev-root", type=Path, default=Path("/"), help="host device nodes: <dev-root>/dev"
    )
    p.add_argument(
        "--driver-module",
        action="append",
        default=[],
        help="import this module to register more device types (repeatable)",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    return p


#: Built when the module is imported, which the zygote does before it forks: a worker then only
#: parses (building a parser runs a lot of argparse, whose objects a forked worker then copies)
PARSER = build_parser()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parses a worker's options (exits with a usage message on bad ones, as argparse does)."""
    return PARSER.parse_args(list(argv))


@dataclass
class Timers:
    """Deadlines of the main loop's periodic jobs (monotonic seconds)."""

    heartbeat_every: float
    rescan_every: float
    next_heartbeat: float = 0.0
    next_rescan: float = 0.0
    jobs: list[str] = field(default_factory=list)

    def start(self, now: float) -> None:
        self.next_heartbeat = now + self.heartbeat_every
        self.next_rescan = now + self.rescan_every

    def timeout(self, now: float) -> float:
        return max(0.0, min(self.next_heartbeat, self.next_rescan) - now)

    def due(self, now: float) -> list[str]:
        # a job due a moment later runs in this wake-up too (one wake-up, not two)
        now += min(1.0, self.heartbeat_every / 4, self.rescan_every / 4)
        out = []
        if now >= self.next_heartbeat:
            out.append("heartbeat")
            self.next_heartbeat = now + self.heartbeat_every
        if now >= self.next_rescan:
            out.append("rescan")
            self.next_rescan = now + self.rescan_every
        return out


class Worker:
    """Wires the pieces of one pool's worker together and runs its loop."""

    def __init__(self, args: argparse.Namespace, config: model.NodeConfig, pool: model.PoolConfig):
        # heavy imports here, not at module level: the zygote may import this module
        from sriovdp.workers.plugin import allocation, devinfo, drivers, registration, servicer
        from sriovdp.workers.plugin.cdi import CdiSpecFile
        from sriovdp.workers.plugin.checkpoint import HeldDevices
        from sriovdp.workers.plugin.server import EventLoopThread, PluginServer
        from sriovdp.workers.plugin.state import PoolState

        self.args = args
        self.config = config
        self.pool = pool
        self.child = pool.child_name
        self.actions: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.ctx = drivers.DriverContext(dev_root=args.dev_root)
        found = self.discover()
        self.log_discovery(found)

        def build_table(devs: Any) -> allocation.AllocationTable:
            drivers.report_missing_nodes(self.pool.resource, devs, self.ctx)
            return allocation.AllocationTable(self.pool, devs, self.ctx, use_cdi=args.use_cdi)

        self.state = PoolState(pool, found.devices, build_table)
        self.devinfo = devinfo.DevInfoWriter(args.devinfo_dir)
        #: which devices pods hold, from the kubelet's checkpoint: decides which device-info
        #: files stay (see prune_devinfo)
        self.held = HeldDevices(args.plugin_dir, pool.resource)
        self._prune_again = False
        self.cdi = CdiSpecFile(args.cdi_dir, self.child) if args.use_cdi else None
        self.servicer = servicer.DevicePluginServicer(self.state, self.devinfo)
        self.servicer.on_unhealthy = self.publish_summary  # status shows it as the last event
        #: the worker's one asyncio loop (thread ``grpc-loop``): gRPC servers and registrar
        self.loop = EventLoopThread()
        self.server = PluginServer(args.plugin_dir, self.child, self.servicer, self.loop)
        self.registrar = registration.Registrar(
            args.plugin_dir,
            pool.resource,
            self.on_registration,
            replace(registration.REGISTER_BACKOFF, cap=args.register_backoff_max),
        )
        #: which kubelet.sock is there now (the module is imported here, not at module level)
        self._kubelet_file = registration.kubelet_identity
        self._kubelet_generation: int | None = None
        self.bus: Any = None
        self._ready_sent = False
        self._summary_lock = threading.Lock()
        self.last_event = "starting"
        self._allocations_logged = (0, 0, 0)

    # -- discovery -------------------------------------------------------------------------------

    def discover(self) -> model.PoolDiscovery:
        from sriovdp.shared.pools import discover_pool

        return discover_pool(self.config, self.child, self.args.sysfs_root, self.args.proc_root)

    def log_discovery(self, found: model.PoolDiscovery) -> None:
        log.info(
            "pool %s: %d devices, %d excluded",
            self.pool.resource,
            len(found.devices),
            len(found.excluded),
        )
        for ex in found.excluded:
            log.debug("excluded %s: %s", ex.id, ex.reason)
        if not found.devices:  # say why, as discover does (for pools that name their devices)
            from sriovdp.shared.pools import explain_named

            why = explain_named(found, self.args.sysfs_root)
            if why is not None:
                reasons = [f"{e.id}: {e.reason}" for e in why.excluded]
                if why.not_found:
                    reasons.append(f"not found on this node: {', '.join(why.not_found)}")
                log.warning(
                    "pool %s has no device: %s",
                    self.pool.resource,
                    "; ".join(reasons) or "nothing it names matches",
                )

    def apply_discovery(self, found: model.PoolDiscovery) -> bool:
        changed = self.state.replace_devices(found.devices)
        if changed:
            self.write_cdi()
            if self.bus is not None:
                self.bus.set_links(self.state.links())
        return changed

    def reload_config(self) -> str:
        """SIGHUP from the supervisor: the config snapshot changed. Returns ``unchanged``,
        ``changed`` (the pool's settings are applied to the current devices here; the caller
        rescans, which applies the new matching rules: a list that comes out the same is not
        sent again) or ``restart`` (the resource this worker registered is not the pool's any
        more: a fresh worker must serve and register it)."""
        from sriovdp.shared.config import ConfigError, load_config

        try:
            config = load_config(self.args.config_file, self.args.resource_prefix)
        except (ConfigError, OSError) as exc:
            log.error(
                "reload: cannot use %s, keeping the running config: %s", self.args.config_file, exc
            )
            return "unchanged"
        pool = config.pool(self.child)
        if pool is None:
            log.warning(
                "reload: %s is gone from %s; the supervisor stops this worker",
                self.child,
                self.args.config_file,
            )
            return "unchanged"
        if pool.resource != self.pool.resource:
            log.info("reload: resource %s is now %s: restarting", self.pool.resource, pool.resource)
            return "restart"
        if config == self.config:
            log.info("reload: config unchanged")
            return "unchanged"
        old, self.config, self.pool = self.pool, config, pool
        if pool != old:
            self.state.set_pool(pool)
            self.write_cdi()
        log.info(
            "reload: new config applied in place (pool settings %s)",
            "changed" if pool != old else "unchanged",
        )
        return "changed"

    def prune_devinfo(self, why: str, force: bool = False) -> None:
        """Removes the device-info files of devices no pod holds, by the kubelet's checkpoint;
        an unusable checkpoint removes nothing. Runs at start, when the checkpoint changed, at
        stop, and at the next heartbeat after files were kept only for being freshly written."""
        held, changed = self.held.refresh(force)
        if held is None or not (changed or force or self._prune_again):
            return
        removed, young = self.devinfo.prune(self.pool.resource, held, self.state.view.devices)
        self._prune_again = young > 0
        if removed:
            log.info(
                "removed %d device-info files of devices no pod holds (%s): %s",
                len(removed),
                why,
                ",".join(removed),
            )

    def pool_removed(self) -> bool:
        """Whether the config (the supervisor's accepted snapshot, which it rewrites before it
        stops the workers of removed pools) no longer has this pool. A config that cannot be
        read says nothing: False."""
        from sriovdp.shared.config import ConfigError, load_config

        try:
            config = load_config(self.args.config_file, self.args.resource_prefix)
        except (ConfigError, OSError) as exc:
            log.warning("cannot tell whether the pool is still configured (%s): keeping files", exc)
            return False
        return config.pool(self.child) is None

    def write_cdi(self) -> None:
        if self.cdi is None:
            return
        try:
            self.cdi.write(self.state.view.allocation)
        except OSError as exc:
            log.error("cannot write CDI spec %s: %s", self.cdi.path, exc)

    # -- bus -------------------------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        if self.bus is not None:
            self.bus.publish(message)

    def publish_summary(self, event: str) -> None:
        if self.bus is None:
            return
        with self._summary_lock:
            self.last_event = event
            view = self.state.view
            self.publish(
                PoolSummary(
                    name=self.child,
                    resource=self.pool.resource,
                    pid=os.getpid(),
                    registered=self.registrar.registered,
                    devices_total=len(view.devices),
                    devices_healthy=view.healthy_count,
                    last_event=event,
                )
            )

    def on_registration(self, status: Any) -> None:
        """Registrar (``grpc-loop``; ``MainThread`` for a forget): registered, or the first
        attempt failed, or the kubelet went away."""
        self.publish_summary(
            "registered" if status.registered else f"not registered: {status.reason}"
        )
        if status.registered:
            self.servicer.counters.note_registered()  # reports the counters
        if not self._ready_sent:
            self._ready_sent = True
            self.servicer.counters.report()  # the metrics child sees the pool from the start
            self.publish(WorkerReady(self.child, os.getpid()))
            runtime.release_memory()  # discovery's garbage

    def on_state(self, view: Any, reason: str) -> None:
        self.publish_summary(reason)

    # -- serving ---------------------------------------------------------------------------------

    def serve(self, why: str) -> None:
        """Serves on a fresh socket and registers it."""
        serving = self.server.start()
        if why != "start":
            log.info("re-serving (%s) on %s", why, serving.name)
        self.registrar.want(serving.name)
        self.publish_summary(f"serving on {serving.name} ({why})")

    def on_kubelet(self, message: Any) -> None:
        if isinstance(message, PluginSocketDeleted):
            cur = self.server.current
            if cur is not None and message.name == cur.name:
                self.serve("own socket deleted")
            return
        if not isinstance(message, KubeletSocketState):
            return
        # The watcher's messages can come after the worker has already found the new
        # kubelet.sock by itself (it retries Register while serving a fresh socket): a message
        # about an older file must not undo a registration on the current one. Registering again
        # on the same kubelet would make it drop its connection to this pool, and every call in
        # flight on it.
        registered_on = self.registrar.registered_identity if self.registrar.registered else None
        if not message.present:
            if registered_on is not None and registered_on == self._kubelet_file(
                self.args.plugin_dir
            ):
                return  # the kubelet.sock it registered on is there: the message is stale
            self.registrar.forget("kubelet.sock gone")
            self.publish_summary("kubelet.sock gone")
            return
        previous, self._kubelet_generation = self._kubelet_generation, message.generation
        if not self.server.socket_intact():
            self.serve(f"kubelet generation {message.generation}, own socket gone")
        elif message.ctime_ns != 0 and (message.inode, message.ctime_ns) == registered_on:
            # registered on exactly this kubelet.sock already, whatever the generation says (a
            # kubelet watcher restarted under load may count generations anew)
            return
        elif previous is not None and message.generation != previous:
            self.registrar.kick(force=True)  # a new kubelet, even if it reused the inode number
        else:
            self.registrar.kick()  # nothing if registered on the kubelet.sock there now

    def log_allocations(self) -> None:
        """One INFO line per heartbeat with Allocate calls since the last one (none: silent)."""
        sv = self.servicer
        now = (sv.allocations, sv.allocated_ids, sv.refused)
        last, self._allocations_logged = self._allocations_logged, now
        if now != last:
            log.info(
                "Allocate: %d calls (%d devices), %d refused since the last report; %d calls total",
                now[0] - last[0],
                now[1] - last[1],
                now[2] - last[2],
                now[0],
            )

    def check_sockets(self) -> None:
        """Safety net without the bus: own socket deleted, or kubelet.sock replaced."""
        if not self.server.socket_intact():
            self.serve("own socket vanished")
            return
        identity = self._kubelet_file(self.args.plugin_dir)
        if identity is not None and identity != self.registrar.registered_identity:
            self.registrar.kick()

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> int:
        from sriovdp.workers.plugin.rescan import Rescanner

        # health as sysfs shows it now, so the first list is right without waiting for the
        # health monitor; its messages (the broker replays the retained ones), applied after
        # these by the bus thread, take over
        for ifname in sorted(self.state.links()):
            link = sysfs.link_state(self.args.sysfs_root, ifname)
            if link is not None:
                self.state.apply_link(link)
        if self.args.run_dir is not None:
            from sriovdp.workers.plugin.bus_link import BusLink

            self.bus = BusLink(self.args.run_dir, self.child, self.state, self.actions)
            self.bus.start(self.state.links())
            self.servicer.counters.publish = self.publish
        self.state.add_listener(self.on_state)
        self.prune_devinfo("start", force=True)
        self.write_cdi()
        try:
            self.serve("start")
        except Exception as exc:
            log.error("cannot serve in %s: %s", self.args.plugin_dir, exc)
            self.shutdown()
            return exitcodes.FAILURE
        self.registrar.start(self.loop.loop)
        rescanner = Rescanner(
            self.args.sysfs_root,
            self.discover,
            self.apply_discovery,
            lambda: list(self.state.view.devices.values()),
            pool=self.pool,
        )
        timers = Timers(self.args.heartbeat_interval, self.args.rescan_interval)
        timers.start(time.monotonic())
        while True:
            try:
                action = self.actions.get(timeout=timers.timeout(time.monotonic()))
            except queue.Empty:
                action = None
            batch = [] if action is None else [action]
            while True:  # coalesce whatever else is waiting
                try:
                    batch.append(self.actions.get_nowait())
                except queue.Empty:
                    break
            kinds = [a[0] for a in batch]
            if "stop" in kinds:
                log.info("stopping (signal)")
                break
            for act in batch:
                if act[0] == "kubelet":
                    self.on_kubelet(act[1])
            if "checkpoint" in kinds:
                self.prune_devinfo("kubelet checkpoint changed")
            if "reload" in kinds:
                verdict = self.reload_config()
                if verdict == "restart":
                    break
                if verdict == "changed":
                    batch.append(("rescan", "config reloaded"))
            reasons = [a[1] for a in batch if a[0] == "rescan"]
            if reasons:
                rescanner.rescan("; ".join(reasons))
            if "bus-failed" in kinds:
                log.error("bus thread died; exiting so the supervisor restarts the worker")
                self.shutdown()
                return exitcodes.FAILURE
            for job in timers.due(time.monotonic()):
                if job == "heartbeat":
                    self.publish(WorkerHeartbeat(self.child, os.getpid()))
                    self.log_allocations()
                    if self.bus is None:  # on the bus, the kubelet watcher tells us
                        self.check_sockets()
                    if self.bus is None or self._prune_again:
                        self.prune_devinfo("heartbeat")
                elif job == "rescan":
                    rescanner.check()
        self.shutdown()
        return exitcodes.OK

    def shutdown(self) -> None:
        """Ends streams (status OK), stops serving, removes its socket. Device-info files of
        devices pods hold stay, whatever the reason of the stop; the CDI spec stays too (pods'
        containers restarting need it) unless the pool is gone from the config."""
        self.state.close()
        self.server.stop(grace=0.3)
        self.log_allocations()
        self.registrar.stop()
        self.loop.stop()
        self.prune_devinfo("stop", force=True)
        removed = self.pool_removed()
        if removed and self.cdi is not None:
            self.cdi.remove()
        log.info(
            "stopped; removed socket%s; %d device-info files left (devices pods hold, or just "
            "allocated)",
            " and CDI spec (pool removed from the config)" if removed and self.cdi else "",
            len(self.devinfo.pool_files(self.pool.resource, self.state.view.devices)),
        )
        if self.bus is not None:
            self.publish(
                PoolSummary(
                    self.child,
                    self.pool.resource,
                    os.getpid(),
                    False,
                    len(self.state.view.devices),
                    self.state.view.healthy_count,
                    "stopped",
                )
            )
            self.bus.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runtime.die_with_parent()
    logs.setup(args.name, args.log_level, args.log_format)
    worker_actions: list[queue.SimpleQueue[tuple[Any, ...]]] = []
    early: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # only enqueue (SimpleQueue.put is safe in a signal handler)
        if worker_actions:
            worker_actions[0].put(("reload",) if signum == signal.SIGHUP else ("stop",))
        else:
            early.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)  # the supervisor's "take the new config"

    from sriovdp.shared.config import ConfigError, load_config

    try:
        config = load_config(args.config_file, args.resource_prefix)
    except (ConfigError, OSError) as exc:
        log.error("invalid config %s: %s", args.config_file, exc)
        return exitcodes.CHILD_CONFIG
    pool = config.pool(args.name)
    if pool is None:
        names = ", ".join(p.child_name for p in config.pools) or "none"
        log.error("no pool %r in %s (pools: %s)", args.name, args.config_file, names)
        return exitcodes.CHILD_CONFIG
    runtime.name_process(f"sriov-dp worker {pool.resource}", runtime.comm_for(pool.child_name))
    from sriovdp.workers.plugin.drivers import registry

    for module in args.driver_module:
        try:
            registry.load_module(module)
        except Exception as exc:
            log.error("cannot load driver module %s: %s", module, exc)
            return exitcodes.CHILD_CONFIG
    try:
        worker = Worker(args, config, pool)
    except OSError as exc:
        log.error("cannot discover pool %s: %s", pool.resource, exc)
        return exitcodes.FAILURE
    worker_actions.append(worker.actions)
    for signum in early:
        worker.actions.put(("reload",) if signum == signal.SIGHUP else ("stop",))
    return worker.run()
