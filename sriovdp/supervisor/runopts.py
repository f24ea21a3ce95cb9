"""What ``sriov-supervisor run`` hands to the supervisor: :class:`RunOptions`, its JSON form and
the config check both sides make (CLI and supervisor process; no zmq).

Kept apart from ``main`` so that the CLI process, which parses the command line with click and
then ``exec``s the supervisor (``python -m sriovdp.supervisor``), does not import the
supervisor's machinery (zmq, the arbiter, config parsing) only to build this record.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from sriovdp.shared.backoff import BackoffPolicy
from sriovdp.shared.config import ConfigError, load_config
from sriovdp.shared.model import NodeConfig
from sriovdp.workers.metrics.address import DEFAULT_METRICS_ADDRESS

#: the module whose ``main(argv) -> int`` every real child runs (``python -m sriovdp.workers``)
WORKERS_ENTRY = "sriovdp.workers.__main__"

#: workers forked from a preloaded zygote share its pages and start faster than fresh
#: interpreters (docs/benchmarks.md); exec stays selectable
DEFAULT_SPAWN_MODE = "zygote"
SPAWN_MODES = ("zygote", "exec")
INFRA_ROLES = ("health-monitor", "kubelet-watcher", "metrics")


@dataclass(frozen=True, slots=True)
class Timeouts:
    heartbeat: float = 45.0  # RUNNING child silent this long: TERM, then restart
    start: float = 30.0  # STARTING without READY this long: TERM, then restart
    stop_grace: float = 3.0  # SIGTERM -> SIGKILL
    tick: float = 60.0  # longest sleep of the loop; every real deadline is computed exactly

    @property
    def heartbeat_interval(self) -> float:
        """How often children beat: three beats may be lost before the timeout strikes.

        At idle the heartbeats are the only periodic traffic of the tree, each one a wake-up of
        its child and of the supervisor, so the tree's idle cost scales with 1/interval. What
        the timeout buys is the detection of a child whose main loop hangs while its process
        lives (a crash is seen at once through SIGCHLD); 45 s is soon enough for that.
        """
        return round(self.heartbeat / 3, 3)


@dataclass(frozen=True, slots=True)
class RunOptions:
    config_file: str
    resource_prefix: str
    plugin_dir: str
    sysfs_root: str
    proc_root: str
    run_dir: str
    devinfo_dir: str
    cdi_dir: str
    use_cdi: bool = False
    log_level: str = "info"
    log_format: str = "text"
    spawn_mode: str = DEFAULT_SPAWN_MODE
    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    #: root under which the host's device nodes are looked up (``<dev_root>/dev/...``)
    dev_root: str = "/"
    #: the module whose ``main(argv)`` every child runs. Not an option of ``run``: only the
    #: supervisor's own entry (``python -m sriovdp.supervisor --options JSON``, which ``run``
    #: execs) reads it. It stays a field because spawning names a module either way
    #: (:class:`~sriovdp.supervisor.spawn.ChildSpec.entry`), and the supervisor's restart,
    #: heartbeat and stop logic is tested with children that misbehave on purpose
    #: (``tests/supervisor/fakechild.py``), started through that entry
    child_entry: str = WORKERS_ENTRY
    #: the infrastructure children to run (``run --no-metrics`` leaves out ``metrics``)
    infra: tuple[str, ...] = INFRA_ROLES
    #: where the metrics child serves /metrics, /healthz and /readyz (when "metrics" is in infra)
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    #: apply a changed config file as ``reload`` does (inotify on its directory)
    watch_config: bool = True


def options_to_json(opts: RunOptions) -> str:
    """``opts`` as one JSON text, for :func:`options_from_json` in another interpreter."""
    return json.dumps(dataclasses.asdict(opts))


def options_from_json(text: str) -> RunOptions:
    """The :class:`RunOptions` that :func:`options_to_json` wrote; ValueError if it is not that."""
    try:
        data = json.loads(text)
        return RunOptions(
            **{
                **data,
                "timeouts": Timeouts(**data["timeouts"]),
                "backoff": BackoffPolicy(**data["backoff"]),
                "infra": tuple(data["infra"]),
            }
        )
    except (TypeError, KeyError) as exc:
        raise ValueError(f"not run options: {exc}") from exc


def checked_config(
    opts: RunOptions, load: Callable[[str, str], NodeConfig] = load_config
) -> NodeConfig | None:
    """The config ``opts`` names, or None after every problem went to stderr (``run`` exits 2).

    The CLI checks before it execs the supervisor (a bad config never gets that far, and ``run``
    under click's test runner still just returns 2); the supervisor checks again, since the
    file is its to read.
    """
    try:
        return load(opts.config_file, opts.resource_prefix)
    except ConfigError as exc:
        print(f"invalid config {opts.config_file}:", file=sys.stderr)
        for message in exc.errors:
            print(f"  {message}", file=sys.stderr)
        return None
