"""``sriov-supervisor run``: the supervisor's single-threaded loop (supervisor process).

Owns the process-level plumbing around the :class:`~sriovdp.supervisor.arbiter.Arbiter`: the
run-dir lock, the ZeroMQ context with the bus broker and the control socket, signal handling,
reaping, config loading and reload. One thread, one loop::

    poll(bus-in, bus-out, control, signal pipe, zygote reports; timeout = next deadline)
    -> signals (queued by the handlers) -> reap -> bus -> control -> arbiter.reconcile()

``reconcile()`` (and working out the next deadline) is skipped after a wake-up that brought
nothing but heartbeats before that deadline: a heartbeat changes no decision, it only moves one.

Signal handlers do nothing but let ``signal.set_wakeup_fd`` write the signal number into a pipe
that the loop polls: the pipe is the queue. Never imports grpc or pyroute2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from sriovdp.launch.runtime import release_memory
from sriovdp.launch.wakeup import WakeupPipe
from sriovdp.shared import exitcodes, libc
from sriovdp.shared.config import ConfigError, load_config
from sriovdp.shared.messages import Envelope, MetricsEndpoint, SupervisorReport, WorkerHeartbeat
from sriovdp.shared.model import NodeConfig
from sriovdp.supervisor.arbiter import Arbiter, ReloadResult
from sriovdp.supervisor.broker import Broker
from sriovdp.supervisor.child import ChildSpec
from sriovdp.supervisor.config_watch import ConfigWatch
from sriovdp.supervisor.control import CommandError, ControlServer
from sriovdp.supervisor.lock import LockedError, PluginDirLock, RunDirError, RunDirLock
from sriovdp.supervisor.report import ReloadCounts, ReportSchedule, build_report
from sriovdp.supervisor.runopts import RunOptions, checked_config
from sriovdp.supervisor.spawn import Spawner, make_spawner, reap
from sriovdp.supervisor.status import SupervisorStatus

log = logging.getLogger(__name__)

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


def config_snapshot(run_dir: str) -> Path:
    """Where the last accepted config lives: workers read this, never the operator's file.

    A worker that restarts later (crash, heartbeat timeout) must come back with the config the
    supervisor validated, not with whatever the operator's file holds at that moment: an edit that
    was never reloaded, or one that a reload refused, must not reach any pool.
    """
    return Path(run_dir) / "config.json"


def write_snapshot(config: NodeConfig, run_dir: str) -> None:
    """Atomically replaces the snapshot with the accepted config's text (mode 0600)."""
    target = config_snapshot(run_dir)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(config.text)
    os.replace(tmp, target)


def match_fingerprint(config: NodeConfig, index: int) -> object:
    """What decides pool ``index``'s devices: its own config and, since the first matching pool
    wins, the matching rules of every pool before it. A reload restarts a pool when this changes.
    """
    earlier = tuple((p.selectors, p.device_type, p.legacy_driver) for p in config.pools[:index])
    return (config.pools[index], earlier)


def build_specs(config: NodeConfig, opts: RunOptions) -> list[ChildSpec]:
    """What should run for this config: the infra children, then one plugin worker per pool.

    Workers read the supervisor's snapshot of the accepted config (:func:`config_snapshot`).
    """
    absolute = os.path.abspath
    common: tuple[str, ...] = ("--log-level", opts.log_level, "--log-format", opts.log_format)
    common += ("--heartbeat-interval", f"{opts.timeouts.heartbeat_interval:g}")
    run_dir = ("--run-dir", absolute(opts.run_dir))
    specs = []
    for role in opts.infra:
        argv: tuple[str, ...] = (role, "--name", role, *run_dir)
        if role == "kubelet-watcher":
            argv += ("--plugin-dir", absolute(opts.plugin_dir))
        if role == "metrics":
            argv += ("--metrics-address", opts.metrics_address)
        specs.append(ChildSpec(role, role, argv + common, entry=opts.child_entry))
    snapshot = absolute(str(config_snapshot(opts.run_dir))) if config.text else None
    for index, pool in enumerate(config.pools):
        config_file = snapshot or absolute(opts.config_file)
        argv = ("plugin", "--name", pool.child_name, "--config-file", config_file)
        argv += ("--resource-prefix", opts.resource_prefix)
        argv += ("--plugin-dir", absolute(opts.plugin_dir))
        argv += ("--sysfs-root", absolute(opts.sysfs_root))
        argv += ("--proc-root", absolute(opts.proc_root))
        argv += ("--dev-root", absolute(opts.dev_root))
        argv += ("--devinfo-dir", absolute(opts.devinfo_dir))
        argv += ("--cdi-dir", absolute(opts.cdi_dir))
        if opts.use_cdi:
            argv += ("--use-cdi",)
        specs.append(
            ChildSpec(
                name=pool.child_name,
                role="plugin",
                argv=argv + run_dir + common,
                resource=pool.resource,
                entry=opts.child_entry,
                fingerprint=match_fingerprint(config, index),
            )
        )
    return specs


class Supervisor:
    """One run: lock, sockets, children, loop; :meth:`run` returns the exit code."""

    def __init__(
        self,
        opts: RunOptions,
        config: NodeConfig,
        load: Callable[[str, str], NodeConfig] = load_config,
    ) -> None:
        self.opts = opts
        self.config = config
        self._load = load
        self.generation = 1
        self.last_reload_error: tuple[str, ...] | None = None
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.reloads = ReloadCounts()
        #: SupervisorReport for the metrics child: on change, and at least once per heartbeat
        #: interval (its age is how /healthz tells a stuck loop)
        self._report = ReportSchedule(opts.timeouts.heartbeat_interval)
        self._dropped_reported = 0
        #: the metrics child's last word on its HTTP endpoint (shown by status)
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.lock = RunDirLock(Path(opts.run_dir))
        self.plugin_lock = PluginDirLock(Path(opts.plugin_dir))
        self.watch: ConfigWatch | None = (
            ConfigWatch(Path(opts.config_file)) if opts.watch_config else None
        )
        self.spawner: Spawner = make_spawner(opts.spawn_mode)
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.broker: Broker | None = None
        self.control: ControlServer | None = None
        self.arbiter: Arbiter | None = None
        self._signals: WakeupPipe | None = None
        self._shutdown_deadline: float | None = None
        #: the bus brought something other than heartbeats since the last reconcile()
        self._bus_news = False

    # -- setup and teardown ------------------------------------------------------------------

    def _setup(self) -> None:
        self.lock.acquire()  # before binding anything: LockedError leaves everything untouched
        try:
            self.plugin_lock.acquire()  # one supervisor per kubelet, whatever its run dir
        except (LockedError, RunDirError):
            self.lock.release()
            raise
        libc.become_subreaper()  # orphans come to us (and to reap()), not to init
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, _enqueue_only)
        self._signals = WakeupPipe()
        if self.watch is not None:
            self.watch.open()
        start = getattr(self.spawner, "start", None)
        if start is not None:
            start()  # the zygote preloads while we bind
        self._ctx = zmq.Context(io_threads=1)
        self.broker = Broker(
            self._ctx,
            Path(self.opts.run_dir),
            on_message=self._on_bus,
        )
        self.control = ControlServer(self._ctx, Path(self.opts.run_dir), self._handlers())
        self.arbiter = Arbiter(
            spawner=self.spawner,
            publish=self.broker.publish,
            timeouts=self.opts.timeouts,
            backoff_policy=self.opts.backoff,
        )
        write_snapshot(self.config, self.opts.run_dir)
        self.arbiter.set_specs(build_specs(self.config, self.opts))
        log.info(
            "supervisor pid %d: %d pools from %s, spawn mode %s, run dir %s",
            os.getpid(),
            len(self.config.pools),
            self.opts.config_file,
            self.spawner.mode,
            self.opts.run_dir,
        )

    def _teardown(self) -> None:
        if self._signals is not None:
            self._signals.close()
        if self.watch is not None:
            self.watch.close()
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for closable in (self.control, self.broker):
            if closable is not None:
                closable.close()
        if self._ctx is not None:
            self._ctx.term()
        if self.lock.held:
            config_snapshot(self.opts.run_dir).unlink(missing_ok=True)
        self.lock.release()
        self.plugin_lock.release()

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._setup()
        except LockedError as exc:
            log.error("%s", exc)
            return exitcodes.LOCKED
        except RunDirError as exc:
            log.error("%s", exc)
            return exitcodes.FAILURE
        try:
            self._loop()
        finally:
            self._teardown()
        log.info("supervisor stopped")
        return exitcodes.OK

    def _loop(self) -> None:
        assert self.arbiter is not None and self.broker is not None and self.control is not None
        arbiter, broker, control = self.arbiter, self.broker, self.control
        arbiter.reconcile()
        due = arbiter.next_deadline()
        release_memory()  # config loading and start-up garbage: the loop runs for months
        poller = zmq.Poller()
        for sock in (broker.pull, broker.xpub, control.sock):
            poller.register(sock, zmq.POLLIN)
        assert self._signals is not None
        sig_fd = self._signals.fileno()
        poller.register(sig_fd, zmq.POLLIN)
        spawner_fd: int | None = None
        watch_fd = self.watch.fileno() if self.watch is not None else None
        if watch_fd is not None:
            poller.register(watch_fd, zmq.POLLIN)
        while True:
            fd = self.spawner.fileno()
            if fd != spawner_fd:
                if spawner_fd is not None:
                    with contextlib.suppress(KeyError):
                        poller.unregister(spawner_fd)
                if fd is not None:
                    poller.register(fd, zmq.POLLIN)
                spawner_fd = fd
            wake = min(due, self._report.due())
            watch_due = self.watch.deadline() if self.watch is not None else None
            if watch_due is not None:
                wake = min(wake, watch_due)
            timeout_ms = max(0, int((wake - time.monotonic()) * 1000) + 1)
            events = dict(poller.poll(timeout_ms))
            # a child's end always shows up here: SIGCHLD writes to the signal pipe (every child,
            # zygote-forked ones included, is ours to reap); a bus message alone (a heartbeat,
            # the idle loop's only work) needs no waitpid()
            news = not events or sig_fd in events or spawner_fd in events
            if spawner_fd in events:
                self.spawner.drain()
            if sig_fd in events:
                self._handle_signals()
            if news:
                self._reap()
            if broker.pull in events:
                broker.handle_pull()  # _on_bus() notes any message that is not a heartbeat
            if broker.xpub in events:
                broker.handle_xpub()
            if control.sock in events:
                control.handle()
                news = True
            if self.watch is not None:
                if watch_fd is not None and watch_fd in events:
                    self.watch.on_readable()
                if self.watch.changed() and not arbiter.stopping:
                    log.info("config file %s changed: reloading", self.opts.config_file)
                    self.reload()
                    news = True
            # A heartbeat only moves its child's deadline later, so after a wake-up that brought
            # nothing else the earlier ``due`` still holds and the table needs no pass: the idle
            # loop's work per heartbeat does not grow with the number of children.
            if news or self._bus_news or time.monotonic() >= due:
                self._bus_news = False
                arbiter.reconcile()
                due = arbiter.next_deadline()
                self._report.changed()
            if broker.stats.dropped != self._dropped_reported:
                self._dropped_reported = broker.stats.dropped
                self._report.changed()
            self._report.maybe_send(time.monotonic(), self._build_report, broker.publish)
            if arbiter.stopping and self._finish_shutdown():
                return

    def _handle_signals(self) -> None:
        assert self._signals is not None
        for signum in self._signals.drain():
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.shutdown(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                self.reload()
            # SIGCHLD: nothing to do here; _reap() runs after every wake-up

    def _reap(self) -> None:
        assert self.arbiter is not None
        for pid, status in reap():
            if self.spawner.reaped(pid, status):
                continue  # the zygote: its workers are ours and run on; the next spawn starts one
            if not self.arbiter.on_exit(pid, status):
                log.debug("reaped orphan pid %d", pid)

    def shutdown(self, why: str) -> None:
        assert self.arbiter is not None
        if self.arbiter.stopping:
            return
        log.info("%s: stopping %d children", why, len(self.arbiter.children))
        self.arbiter.stop_all()
        grace = self.opts.timeouts.stop_grace
        self._shutdown_deadline = time.monotonic() + grace + 2.0

    def _finish_shutdown(self) -> bool:
        """True when every child is gone and the zygote (if any) has been reaped."""
        assert self.arbiter is not None
        late = self._shutdown_deadline is not None and time.monotonic() > self._shutdown_deadline
        if not self.arbiter.all_stopped() and not late:
            return False
        self.spawner.close()
        deadline = time.monotonic() + 1.0
        while self.spawner.helper_pid() is not None:
            self._reap()
            if self.spawner.helper_pid() is None:
                break
            if time.monotonic() > deadline:
                self.spawner.kill_helper()
                deadline = time.monotonic() + 5.0
            time.sleep(0.002)
        self._reap()
        return True

    # -- bus and control -------------------------------------------------------------------------

    def _build_report(self) -> SupervisorReport:
        assert self.arbiter is not None and self.broker is not None
        return build_report(
            started=self.started_wall,
            interval=self._report.interval,
            generation=self.generation,
            reloads=self.reloads,
            bus_dropped=self.broker.stats.dropped,
            children=self.arbiter.children.values(),
        )

    def _on_bus(self, env: Envelope) -> None:
        if not isinstance(env.message, WorkerHeartbeat):
            self._bus_news = True
        if isinstance(env.message, MetricsEndpoint):
            self.metrics_endpoint = env.message
        if self.arbiter is not None:
            self.arbiter.on_message(env)

    def _handlers(self) -> Mapping[str, Callable[[Mapping[str, Any]], Any]]:
        return {
            "status": lambda _args: self.status().to_dict(),
            "reload": lambda _args: self._reload_command(),
            "restart": self._restart_command,
            "ping": lambda _args: {"pid": os.getpid()},
        }

    def status(self) -> SupervisorStatus:
        assert self.arbiter is not None and self.broker is not None and self.control is not None
        bus = self.broker.stats
        ctl = self.control.stats
        return SupervisorStatus(
            pid=os.getpid(),
            uptime=time.monotonic() - self.started,
            generation=self.generation,
            config_file=self.opts.config_file,
            spawn_mode=self.spawner.mode,
            last_reload_error=self.last_reload_error,
            children=tuple(self.arbiter.rows()),
            bus={"forwarded": bus.forwarded, "dropped": bus.dropped, "replayed": bus.replayed},
            control={"requests": ctl.requests, "errors": ctl.errors, "dropped": ctl.dropped},
            zygote={"pid": self.spawner.helper_pid(), "starts": self.spawner.starts}
            if self.spawner.mode == "zygote"
            else {},
            metrics=self._metrics_status(),
        )

    def _metrics_status(self) -> dict[str, Any]:
        if "metrics" not in self.opts.infra:
            return {}
        endpoint = self.metrics_endpoint
        return {
            "address": self.opts.metrics_address,
            "listening": endpoint.listening if endpoint else False,
            "bound": endpoint.bound if endpoint else "",
            "error": endpoint.error if endpoint else "not started yet",
        }

    def reload(self) -> ReloadResult | None:
        """Re-reads the config; on success applies it, else changes nothing and keeps the error."""
        assert self.arbiter is not None
        if self.arbiter.stopping:
            return None
        try:
            config = self._load(self.opts.config_file, self.opts.resource_prefix)
        except ConfigError as exc:
            self.last_reload_error = tuple(exc.errors)
            self.reloads.refused += 1
            self.reloads.last_refused = True
            self._report.changed()
            log.error(
                "reload: invalid config %s, keeping generation %d:\n  %s",
                self.opts.config_file,
                self.generation,
                "\n  ".join(exc.errors),
            )
            return None
        if config == self.config:
            was_refused = self.last_reload_error is not None
            self.last_reload_error = None
            self.reloads.last_refused = False
            if was_refused:
                self._report.changed()
            log.info("reload: %s unchanged, generation %d", self.opts.config_file, self.generation)
            return ReloadResult((), (), (), tuple(self.arbiter.children))
        write_snapshot(config, self.opts.run_dir)
        result = self.arbiter.set_specs(build_specs(config, self.opts))
        self.config = config
        self.generation += 1
        self.last_reload_error = None
        self.reloads.applied += 1
        self.reloads.last_refused = False
        self._report.changed()
        log.info(
            "reload: generation %d: started %s, updated in place %s, restarted %s, stopped %s, "
            "unchanged %d",
            self.generation,
            list(result.started),
            list(result.updated),
            list(result.restarted),
            list(result.stopped),
            len(result.unchanged),
        )
        return result

    def _reload_command(self) -> dict[str, Any]:
        result = self.reload()
        if result is None:
            raise CommandError(
                "invalid config, nothing changed:\n" + "\n".join(self.last_reload_error or ())
            )
        return {
            "generation": self.generation,
            "started": list(result.started),
            "updated": list(result.updated),
            "restarted": list(result.restarted),
            "stopped": list(result.stopped),
            "unchanged": list(result.unchanged),
        }

    def _restart_command(self, args: Mapping[str, Any]) -> dict[str, Any]:
        assert self.arbiter is not None
        name = args.get("name")
        if not isinstance(name, str):
            raise CommandError("restart needs a child name")
        if self.arbiter.stopping:
            raise CommandError("the supervisor is shutting down")
        if not self.arbiter.restart(name):
            known = ", ".join(self.arbiter.children)
            raise CommandError(f"no child named {name!r} (children: {known})")
        return {"name": name}


def _enqueue_only(_signum: int, _frame: object) -> None:
    """The handler of every signal we catch: the wakeup fd already queued its number."""


def run(opts: RunOptions, load: Callable[[str, str], NodeConfig] = load_config) -> int:
    """Validates the config (exit 2 with every message), then supervises until TERM/INT."""
    os.umask(0o077)  # sockets and files: ours only
    config = checked_config(opts, load)
    if config is None:
        return exitcodes.INVALID_CONFIG
    return Supervisor(opts, config, load).run()
