"""gRPC wire details (sriovdp.workers.grpcwire.framing, .status): message framing split and packed
over DATA frames, limits, grpc-timeout, grpc-message percent-encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sriovdp.workers.grpcwire.framing import (
    FramingError,
    MessageDecoder,
    encode_message,
    format_timeout,
    parse_timeout,
    percent_decode,
    percent_encode,
)
from sriovdp.workers.grpcwire.status import RpcError, StatusCode

messages = st.lists(st.binary(max_size=300), max_size=8)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        out.append(data[last:p])
        last = p
    return out


@given(messages, st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_messages_survive_any_split_and_packing(msgs: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_message(m) for m in msgs)
    decoder = MessageDecoder(1000)
    got: list[bytes] = []
    for chunk in chunked(wire, cuts):
        got.extend(decoder.feed(chunk))
    assert got == msgs
    assert decoder.pending == 0


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=1, max_value=204))
def test_a_cut_message_stays_pending(msg: bytes, keep: int) -> None:
    wire = encode_message(msg)
    keep = min(keep, len(wire) - 1)
    decoder = MessageDecoder()
    assert decoder.feed(wire[:keep]) == []
    assert decoder.pending == keep
    assert decoder.feed(wire[keep:]) == [msg]


def test_encoding_is_the_grpc_prefix() -> None:
    assert encode_message(b"") == b"\x00\x00\x00\x00\x00"
    assert encode_message(b"ab") == b"\x00\x00\x00\x00\x02ab"
    assert encode_message(b"x" * 70000)[:5] == b"\x00\x00\x01\x11\x70"


def test_the_limit_is_checked_on_the_prefix_alone() -> None:
    decoder = MessageDecoder(10)
    assert decoder.feed(encode_message(b"x" * 10)) == [b"x" * 10]  # at the limit: fine
    with pytest.raises(FramingError) as err:
        decoder.feed(b"\x00\x00\x00\x00\x0b")  # 11 announced, nothing sent yet
    assert err.value.code == StatusCode.RESOURCE_EXHAUSTED
    assert "11 bytes" in err.value.details and "10 bytes" in err.value.details
    with pytest.raises(FramingError) as err:
        MessageDecoder(10).feed(b"\x00\xff\xff\xff\xff")
    assert err.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_compressed_and_invalid_flags() -> None:
    with pytest.raises(FramingError) as err:
        MessageDecoder().feed(b"\x01\x00\x00\x00\x01x")
    assert err.value.code == StatusCode.UNIMPLEMENTED
    with pytest.raises(FramingError) as err:
        MessageDecoder().feed(b"\x80\x00\x00\x00\x00")
    assert err.value.code == StatusCode.INTERNAL
    # a good message packed before a bad one: the error is raised, the stream ends anyway
    with pytest.raises(FramingError):
        MessageDecoder().feed(encode_message(b"ok") + b"\x01\x00\x00\x00\x00")


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        MessageDecoder(-1)


@pytest.mark.parametrize(
    "value,seconds",
    [
        ("1H", 3600.0),
        ("2M", 120.0),
        ("30S", 30.0),
        ("100m", 0.1),
        ("250u", 250e-6),
        ("99999999n", 0.099999999),
        (b"12S", 12.0),
        ("00000001S", 1.0),
    ],
)
def test_timeout_parsing(value: str | bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", "S", "1", "123456789S", "1s", "1.5S", "-1S", " 1S", "1 S", "\u0661S", "1SS", b"\xff"],
)
def test_malformed_timeouts_are_refused(value: str | bytes) -> None:
    with pytest.raises(ValueError, match="grpc-timeout"):
        parse_timeout(value)


@given(st.floats(min_value=1e-9, max_value=1e8, allow_nan=False))
def test_formatted_timeouts_parse_back_never_shorter(seconds: float) -> None:
    text = format_timeout(seconds)
    assert len(text) <= 9
    back = parse_timeout(text)
    assert back >= seconds * (1 - 1e-12)
    assert back <= seconds * 1.01 + 1e-9  # the finest unit that fits: close to the request


def test_format_timeout_examples_and_refusals() -> None:
    assert format_timeout(12.0) == "12000000u"
    assert format_timeout(0.05) == "50000000n"
    assert format_timeout(3600 * 24) == "86400000m"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            format_timeout(bad)


@pytest.mark.parametrize(
    "text,wire",
    [
        ("plain ascii, with ~ and !", "plain ascii, with ~ and !"),
        ("100%", "100%25"),
        ("tab\there\n", "tab%09here%0A"),
        ("Gerät ✓", "Ger%C3%A4t %E2%9C%93"),
        ("", ""),
    ],
)
def test_percent_encoding(text: str, wire: str) -> None:
    assert percent_encode(text) == wire
    assert percent_decode(wire) == text
    assert percent_decode(wire.encode()) == text


@given(st.text())
def test_percent_encoding_round_trips(text: str) -> None:
    wire = percent_encode(text)
    assert all(0x20 <= ord(c) <= 0x7E for c in wire)
    expected = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    assert percent_decode(wire) == expected


@given(st.binary())
def test_percent_decoding_never_fails(raw: bytes) -> None:
    assert isinstance(percent_decode(raw), str)


def test_percent_decoding_is_lenient() -> None:
    assert percent_decode("50%") == "50%"
    assert percent_decode("%zz%4") == "%zz%4"
    assert percent_decode("%41%42") == "AB"
    assert percent_decode("%FF") == "\ufffd"


def test_status_codes() -> None:
    assert len(StatusCode) == 17
    assert [int(c) for c in StatusCode] == list(range(17))
    assert StatusCode(16).name == "UNAUTHENTICATED"
    assert StatusCode.from_wire(b"14") == StatusCode.UNAVAILABLE
    assert StatusCode.from_wire("99") == StatusCode.UNKNOWN
    assert StatusCode.from_wire(b"x") == StatusCode.UNKNOWN
    err = RpcError(StatusCode.NOT_FOUND, "no such thing")
    assert (err.code, err.details, str(err)) == (
        StatusCode.NOT_FOUND,
        "no such thing",
        "NOT_FOUND: no such thing",
    )
