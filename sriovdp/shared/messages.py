"""Bus messages: one frozen dataclass per kind and the versioned msgpack envelope (every process).

A message travels as two ZeroMQ frames: the topic (``<kind>.<name>.<event>``, ASCII) and the
envelope ``{"v": 1, "kind": str, "src": str, "seq": int, "ts": float, "body": {...}}`` packed with
msgpack. Bodies carry full state, never deltas, so a consumer that missed messages is right again
after the next one; ``seq`` increases per producer across restarts (it starts from the monotonic
clock), and consumers drop anything not newer than what they applied for that topic.

Decoding is strict: a frame that is not msgpack, too large, of an unknown version or kind, or with a
body whose fields are missing, extra or of the wrong type raises :class:`MessageError`. Callers
count and log it; nothing here ever lets a bad frame through or crashes on one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

import msgpack

ENVELOPE_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
MAX_TOPIC_BYTES = 512


class MessageError(ValueError):
    """A frame that is not a valid bus message; the text says why."""


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every bus message kind."""

    KIND: ClassVar[str] = ""
    #: retained topics are kept by the broker's last-value cache and replayed to late subscribers
    RETAINED: ClassVar[bool] = False

    def topic(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class LinkState(Message):
    """Full state of one network interface, from the health monitor."""

    KIND: ClassVar[str] = "link.state"
    RETAINED: ClassVar[bool] = True

    ifname: str
    ifindex: int
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    carrier: bool
    present: bool

    @property
    def healthy(self) -> bool:
        """Link usable: present, carrier, and operationally up (UNKNOWN counts as up, as for lo)."""
        return self.present and self.carrier and self.operstate in ("UP", "UNKNOWN")

    def topic(self) -> str:
        return f"link.{self.ifname}.state"


@dataclass(frozen=True, slots=True)
class KubeletSocketState(Message):
    """Identity of ``kubelet.sock`` (from the kubelet watcher); a new generation: re-register."""

    KIND: ClassVar[str] = "kubelet.socket.state"
    RETAINED: ClassVar[bool] = True

    present: bool
    inode: int
    generation: int
    #: change time of the file (0 when absent): with ``inode`` it identifies the file, since ext4
    #: gives a freed inode number to the next file created (added; defaults for older callers)
    ctime_ns: int = 0

    def topic(self) -> str:
        return "kubelet.socket.state"


@dataclass(frozen=True, slots=True)
class PluginSocketDeleted(Message):
    """A socket file other than ``kubelet.sock`` vanished from the plugin directory."""

    KIND: ClassVar[str] = "kubelet.plugin.deleted"

    name: str  # file name relative to the plugin directory
    inode: int

    def topic(self) -> str:
        return "kubelet.plugin.deleted"


@dataclass(frozen=True, slots=True)
class KubeletCheckpointState(Message):
    """Identity of the kubelet's device checkpoint (``kubelet_internal_checkpoint``, from the
    kubelet watcher): a new identity means the kubelet rewrote it, and plugin workers read it
    again to learn which devices pods hold. The file's content never travels on the bus."""

    KIND: ClassVar[str] = "kubelet.checkpoint.state"
    RETAINED: ClassVar[bool] = True

    present: bool
    inode: int
    ctime_ns: int

    def topic(self) -> str:
        return "kubelet.checkpoint.state"


@dataclass(frozen=True, slots=True)
class DeviceEvent(Message):
    """A kernel uevent about a PCI function, an auxiliary device or a network interface (from the
    health monitor): the pools it may concern rescan at once instead of at their next periodic
    check. ``name`` is the PCI address (``pci``), the device name (``auxiliary``) or the interface
    (``net``); ``action`` the kernel's (add, remove, bind, unbind, change, move), or ``resync``
    with name ``*`` after events may have been lost; ``driver`` is "" when none is named."""

    KIND: ClassVar[str] = "device.event"

    subsystem: str
    name: str
    action: str
    driver: str

    def topic(self) -> str:
        return f"device.{self.subsystem}.{self.name}"


@dataclass(frozen=True, slots=True)
class WorkerReady(Message):
    """A child finished starting (plugin: serving and registered; monitor: first dump published)."""

    KIND: ClassVar[str] = "worker.ready"

    name: str
    pid: int

    def topic(self) -> str:
        return f"worker.{self.name}.ready"


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat(Message):
    """Proof of life from a child's main loop."""

    KIND: ClassVar[str] = "worker.hb"

    name: str
    pid: int

    def topic(self) -> str:
        return f"worker.{self.name}.hb"


@dataclass(frozen=True, slots=True)
class PoolSummary(Message):
    """What ``status`` shows of a pool: registration and device health, from its plugin worker."""

    KIND: ClassVar[str] = "pool.summary"
    RETAINED: ClassVar[bool] = True

    name: str  # child name of the worker
    resource: str  # "<prefix>/<name>"
    pid: int
    registered: bool
    devices_total: int
    devices_healthy: int
    last_event: str

    def topic(self) -> str:
        return f"pool.{self.name}.summary"


@dataclass(frozen=True, slots=True)
class WorkerStateChanged(Message):
    """A child's state in the supervisor's table changed (published by the supervisor)."""

    KIND: ClassVar[str] = "worker.state"
    RETAINED: ClassVar[bool] = True

    name: str
    state: str
    pid: int

    def topic(self) -> str:
        return f"worker.{self.name}.state"


@dataclass(frozen=True, slots=True)
class PoolStats(Message):
    """A pool's request counters since its worker started, sent on change at most once a
    second and with each heartbeat (never one message per call); for the metrics child."""

    KIND: ClassVar[str] = "pool.stats"
    RETAINED: ClassVar[bool] = True

    name: str  # child name of the worker
    resource: str
    pid: int
    #: Allocate calls by outcome: "ok" or the gRPC code of the refusal, lower case
    allocate_outcomes: tuple[str, ...]
    allocate_calls: tuple[int, ...]
    allocated_devices: int  # device ids handed out by successful calls
    #: Allocate latency: upper bounds in seconds (ascending, +Inf implied) and the count of calls
    #: in each bucket, not cumulative (one more count than bounds: the +Inf bucket)
    latency_bounds: tuple[float, ...]
    latency_counts: tuple[int, ...]
    latency_sum: float
    preferred_calls: int  # GetPreferredAllocation calls
    unhealthy_requests: int  # Allocate calls naming a device that was unhealthy at the time
    registrations: int  # successful Register calls to the kubelet

    def topic(self) -> str:
        return f"pool.{self.name}.stats"


@dataclass(frozen=True, slots=True)
class SupervisorReport(Message):
    """The supervisor's own facts and its child table, for the metrics child: sent when they
    change (at most once a second) and at least every ``interval`` seconds, so a report older
    than a few intervals means a stuck supervisor loop. The ``child``-indexed tuples are
    parallel: entry ``i`` of each describes ``children[i]``."""

    KIND: ClassVar[str] = "supervisor.report"
    RETAINED: ClassVar[bool] = True

    pid: int
    started: float  # wall-clock time the supervisor started
    interval: float  # longest time between two reports
    generation: int  # config generation (1 at start, +1 per applied reload)
    reloads_applied: int
    reloads_refused: int
    last_reload_refused: bool
    bus_dropped: int  # frames the broker refused as malformed or could not forward
    children: tuple[str, ...]
    roles: tuple[str, ...]
    states: tuple[str, ...]
    restarts: tuple[int, ...]
    #: last exit as a return code (exit status, or minus the signal number); exited[i] False:
    #: that child never ended yet and exit_codes[i] means nothing
    exited: tuple[bool, ...]
    exit_codes: tuple[int, ...]

    def topic(self) -> str:
        return "supervisor.report"


@dataclass(frozen=True, slots=True)
class MetricsEndpoint(Message):
    """Whether the metrics child listens on its HTTP address, and why not (for ``status``)."""

    KIND: ClassVar[str] = "metrics.endpoint"
    RETAINED: ClassVar[bool] = True

    name: str
    pid: int
    address: str  # as configured, HOST:PORT
    listening: bool
    bound: str  # the address actually bound (port 0 resolved), "" when not listening
    error: str  # why it does not listen, "" when it does

    def topic(self) -> str:
        return "metrics.endpoint"


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        LinkState,
        KubeletSocketState,
        PluginSocketDeleted,
        KubeletCheckpointState,
        DeviceEvent,
        WorkerReady,
        WorkerHeartbeat,
        PoolSummary,
        WorkerStateChanged,
        PoolStats,
        SupervisorReport,
        MetricsEndpoint,
    )
}

_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message with its routing facts."""

    topic: str
    kind: str
    src: str
    seq: int
    ts: float
    message: Message


class SequenceCounter:
    """Strictly increasing per producer, also across restarts (starts at the monotonic clock)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.monotonic_ns())
        return self._last


def encode(message: Message, src: str, seq: int) -> tuple[bytes, bytes]:
    """Returns the (topic, envelope) frames of a message."""
    body = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    envelope = {
        "v": ENVELOPE_VERSION,
        "kind": message.KIND,
        "src": src,
        "seq": seq,
        "ts": time.time(),
        "body": body,
    }
    return message.topic().encode("ascii"), msgpack.packb(envelope, use_bin_type=True)


_SCALARS: dict[Any, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (float, int),
}


def _scalar_types(hint: Any) -> tuple[type, ...]:
    return _SCALARS[getattr(hint, "__name__", str(hint))]


def _field_types(cls: type[Message]) -> dict[str, tuple[type, ...]]:
    """Field name -> the Python types its msgpack value may have, in declaration order.

    A ``tuple[X, ...]`` field travels as a msgpack array: its value must be a list (or tuple)
    whose items have X's types; :data:`_ITEM_TYPES` holds those.
    """
    hints = get_type_hints(cls)
    return {
        f.name: (list, tuple)
        if get_origin(hints[f.name]) is tuple
        else _scalar_types(hints[f.name])
        for f in dataclasses.fields(cls)
    }


def _item_types(cls: type[Message]) -> dict[str, tuple[type, ...]]:
    """Field name -> the types of its items, for the ``tuple[X, ...]`` fields only."""
    hints = get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if get_origin(hints[f.name]) is tuple:
            item, ellipsis = get_args(hints[f.name])
            assert ellipsis is Ellipsis, f"{cls.KIND}.{f.name}: only tuple[X, ...] fields"
            out[f.name] = _scalar_types(item)
    return out


#: worked out once at import: ``get_type_hints`` evaluates every (string) annotation again on
#: each call
_FIELD_TYPES: dict[type[Message], dict[str, tuple[type, ...]]] = {
    cls: _field_types(cls) for cls in KINDS.values()
}
_ITEM_TYPES: dict[type[Message], dict[str, tuple[type, ...]]] = {
    cls: _item_types(cls) for cls in KINDS.values()
}


def _check_value(kind: str, name: str, value: Any, expected: tuple[type, ...]) -> None:
    # bool is an int subclass: an int field must not accept True, a bool field only bools
    if isinstance(value, bool) and bool not in expected:
        raise MessageError(f"{kind}: field {name!r} is bool, expected {expected[0].__name__}")
    if not isinstance(value, expected):
        raise MessageError(
            f"{kind}: field {name!r} is {type(value).__name__}, expected {expected[0].__name__}"
        )


def _check_body(cls: type[_M], body: Any) -> _M:
    if not isinstance(body, dict):
        raise MessageError(f"{cls.KIND}: body is {type(body).__name__}, not a map")
    fields = _FIELD_TYPES[cls]
    if body.keys() != fields.keys():
        missing = sorted(set(fields) - set(body))
        extra = sorted(str(k) for k in set(body) - set(fields))
        raise MessageError(f"{cls.KIND}: missing fields {missing}, unexpected fields {extra}")
    items = _ITEM_TYPES[cls]
    for name, value in body.items():
        _check_value(cls.KIND, name, value, fields[name])
        if name in items:
            for item in value:
                _check_value(cls.KIND, f"{name}[]", item, items[name])
    if items:
        body = {k: tuple(v) if k in items else v for k, v in body.items()}
    return cls(**body)


def decode(topic: bytes, payload: bytes) -> Envelope:
    """Parses and validates two frames; raises MessageError for anything malformed."""
    if len(payload) > MAX_FRAME_BYTES:
        raise MessageError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    if len(topic) > MAX_TOPIC_BYTES:
        raise MessageError(f"topic of {len(topic)} bytes exceeds {MAX_TOPIC_BYTES}")
    try:
        topic_text = topic.decode("ascii")
        env = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MessageError(f"undecodable frame: {exc}") from None
    except Exception as exc:  # msgpack raises a few odd types on hostile input
        raise MessageError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
    if not isinstance(env, dict):
        raise MessageError(f"envelope is {type(env).__name__}, not a map")
    if env.get("v") != ENVELOPE_VERSION:
        raise MessageError(f"unsupported envelope version {env.get('v')!r}")
    kind, src, seq, ts = env.get("kind"), env.get("src"), env.get("seq"), env.get("ts")
    if not isinstance(kind, str) or kind not in KINDS:
        raise MessageError(f"unknown message kind {kind!r}")
    if not isinstance(src, str) or not isinstance(seq, int) or isinstance(seq, bool):
        raise MessageError("envelope src/seq missing or of the wrong type")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise MessageError("envelope ts missing or of the wrong type")
    message = _check_body(KINDS[kind], env.get("body"))
    if message.topic() != topic_text:
        raise MessageError(f"topic {topic_text!r} does not match {kind} body ({message.topic()!r})")
    return Envelope(topic_text, kind, src, seq, float(ts), message)
