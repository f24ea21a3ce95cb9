"""gRPC's wire details above HTTP/2 (plugin worker process, any thread; pure functions and a
per-stream decoder).

- Length-prefixed messages: a 1-byte compressed flag and a 4-byte big-endian length, then the
  serialized message. :class:`MessageDecoder` takes the payload of DATA frames as it arrives
  (a message may be split over frames, several may share one) and checks the size limit on the
  prefix, before buffering anything.
- ``grpc-timeout``: at most 8 digits and a unit (``H M S m u n``).
- ``grpc-message``: percent-encoded UTF-8; bytes outside 0x20-0x7E and ``%`` itself become
  ``%XX``. Decoding is lenient, as the spec asks: a ``%`` not followed by two hex digits is kept.

Reference: grpc/doc/PROTOCOL-HTTP2.md.
"""

from __future__ import annotations

import math

from sriovdp.workers.grpcwire.status import StatusCode

PREFIX_SIZE = 5
#: grpc's default receive limit
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: the finest unit first: a timeout is sent in the finest unit that fits in 8 digits
_FORMAT_UNITS = (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600))
MAX_TIMEOUT_DIGITS = 8
_HEX = frozenset(b"0123456789abcdefABCDEF")


class FramingError(Exception):
    """A message stream the receiver cannot accept; ``code`` is the status to end the RPC with."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def encode_message(payload: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class MessageDecoder:
    """Splits a stream's DATA payloads into messages; one per stream and direction.

    :meth:`feed` returns the messages completed by a chunk (often exactly one) and raises
    :class:`FramingError` for a compressed message (UNIMPLEMENTED: we announce no compression),
    a flag byte other than 0 or 1 (INTERNAL) or a message over ``max_size`` (RESOURCE_EXHAUSTED).
    After an error the decoder is spent: the stream must end.
    """

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, not {max_size}")
        self.max_size = max_size
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message (a stream that ends here was truncated)."""
        return len(self._buf)

    def _check(self, flag: int, length: int) -> None:
        if flag == 1:
            raise FramingError(
                StatusCode.UNIMPLEMENTED, "compressed messages are not supported (no grpc-encoding)"
            )
        if flag != 0:
            raise FramingError(StatusCode.INTERNAL, f"invalid message flag byte 0x{flag:02x}")
        if length > self.max_size:
            raise FramingError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"received message of {length} bytes exceeds the limit of {self.max_size} bytes",
            )

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= PREFIX_SIZE:
            flag = buf[pos]
            length = int.from_bytes(buf[pos + 1 : pos + PREFIX_SIZE], "big")
            self._check(flag, length)
            stop = pos + PREFIX_SIZE + length
            if stop > end:
                break
            out.append(buf[pos + PREFIX_SIZE : stop])
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return out


def parse_timeout(value: str | bytes) -> float:
    """Seconds of a ``grpc-timeout`` value such as ``"100m"``; ValueError if malformed."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    digits, unit = text[:-1], text[-1:]
    if (
        unit not in TIMEOUT_UNITS
        or not 1 <= len(digits) <= MAX_TIMEOUT_DIGITS
        or not digits.isascii()
        or not digits.isdigit()
    ):
        raise ValueError(f"malformed grpc-timeout {text!r} (expected 1-8 digits and one of HMSmun)")
    return int(digits) * TIMEOUT_UNITS[unit]


def format_timeout(seconds: float) -> str:
    """A ``grpc-timeout`` value for ``seconds`` (> 0): the finest unit that fits in 8 digits,
    rounded up so the server never sees a shorter deadline than the client's."""
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"timeout must be a positive finite number of seconds, not {seconds}")
    for unit, per_second in _FORMAT_UNITS:
        amount = math.ceil(seconds * per_second)
        if amount < 10**MAX_TIMEOUT_DIGITS:
            return f"{max(1, amount)}{unit}"
    return f"{10**MAX_TIMEOUT_DIGITS - 1}H"  # over 11 years: as good as none


def percent_encode(text: str) -> str:
    """``grpc-message`` encoding of ``text`` (lone surrogates become ``?``)."""
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw.decode("ascii")
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)


def percent_decode(value: str | bytes) -> str:
    """The text of a ``grpc-message`` value; invalid escapes are kept as they are and invalid
    UTF-8 becomes U+FFFD, never an error."""
    raw = value.encode("utf-8", "replace") if isinstance(value, str) else value
    if b"%" not in raw:
        return raw.decode("utf-8", "replace")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "replace")
