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
from typing import Any, ClassVar, TypeVar, get_type_hints

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


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        LinkState,
        KubeletSocketState,
        PluginSocketDeleted,
        WorkerReady,
        WorkerHeartbeat,
        PoolSummary,
        WorkerStateChanged,
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


def _field_types(cls: type[Message]) -> dict[str, tuple[type, ...]]:
    """Field name -> the Python types its msgpack value may have, in declaration order."""
    hints = get_type_hints(cls)
    return {
        f.name: _SCALARS[getattr(hints[f.name], "__name__", str(hints[f.name]))]
        for f in dataclasses.fields(cls)
    }


#: worked out once at import: ``get_type_hints`` evaluates every (string) annotation again on
#: each call
_FIELD_TYPES: dict[type[Message], dict[str, tuple[type, ...]]] = {
    cls: _field_types(cls) for cls in KINDS.values()
}


def _check_body(cls: type[_M], body: Any) -> _M:
    if not isinstance(body, dict):
        raise MessageError(f"{cls.KIND}: body is {type(body).__name__}, not a map")
    fields = _FIELD_TYPES[cls]
    if body.keys() != fields.keys():
        missing = sorted(set(fields) - set(body))
        extra = sorted(str(k) for k in set(body) - set(fields))
        raise MessageError(f"{cls.KIND}: missing fields {missing}, unexpected fields {extra}")
    for name, value in body.items():
        expected = fields[name]
        # bool is an int subclass: an int field must not accept True, a bool field only bools
        if isinstance(value, bool) and bool not in expected:
            want = expected[0].__name__
            raise MessageError(f"{cls.KIND}: field {name!r} is bool, expected {want}")
        if not isinstance(value, expected):
            raise MessageError(
                f"{cls.KIND}: field {name!r} is {type(value).__name__}, "
                f"expected {expected[0].__name__}"
            )
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
