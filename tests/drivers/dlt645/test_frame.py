"""DL/T 645-2007 framing and BCD codecs, byte for byte and by property."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from smartpole.drivers.dlt645.frame import (
    MAX_DATA_LEN,
    MAX_FRAME_LEN,
    WAKEUP,
    Frame,
    FrameReader,
    address_matches,
    decode_bcd,
    decode_frame,
    encode_bcd,
    encode_frame,
    error_reply,
    parse_address_reply,
    parse_format,
    parse_read_reply,
    read_address_reply,
    read_address_request,
    read_data_reply,
    read_data_request,
)
from smartpole.drivers.errors import CodecError, DeviceExceptionError, ProtocolError


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- known frames, byte for byte ----------------------------------------------------------

# Checksums worked out by hand: the sum of every byte from the first 68 through the last
# data byte, modulo 256. 0x68 + 6*0xAA + 0x68 + 0x13 + 0x00 = 0x4DF -> DF.
READ_ADDRESS_BROADCAST = h("68 AA AA AA AA AA AA 68 13 00 DF 16")
# Read DI 02010100 (phase A voltage) from 000000000001: the DI goes out DI0 first, each byte
# +0x33: 00 01 01 02 -> 33 34 34 35. Sum = 0x1B6 -> B6.
READ_VOLTAGE = h("68 01 00 00 00 00 00 68 11 04 33 34 34 35 B6 16")
# The meter's answer: control 0x91, L = 4 DI bytes + 2 value bytes; 220.1 V in XXX.X is
# BCD 2201, LSB first 01 22, on the wire 34 55. Sum = 0x2C1 -> C1.
VOLTAGE_REPLY = h("68 01 00 00 00 00 00 68 91 06 33 34 34 35 34 55 C1 16")
# Abnormal answer 0xD1 with error byte 0x02 (no requested data) -> 0x35 on the wire. D8.
NO_DATA_REPLY = h("68 01 00 00 00 00 00 68 D1 01 35 D8 16")


def test_read_address_broadcast_byte_for_byte() -> None:
    assert read_address_request(preamble=False) == READ_ADDRESS_BROADCAST
    assert read_address_request() == h("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16")


def test_read_data_request_byte_for_byte() -> None:
    assert read_data_request("000000000001", 0x02010100, preamble=False) == READ_VOLTAGE
    assert read_data_request("000000000001", 0x02010100) == WAKEUP + READ_VOLTAGE


def test_address_goes_out_least_significant_byte_first() -> None:
    wire = encode_frame("123456789012", 0x11, b"", preamble=False)
    assert wire[1:7] == h("12 90 78 56 34 12")
    (_, frame) = decode_frame(wire)
    assert frame is not None
    assert frame.address == "123456789012"


def test_known_reply_decodes_to_the_documented_value() -> None:
    used, frame = decode_frame(WAKEUP + VOLTAGE_REPLY)
    assert (used, frame) == (4, None)  # the wake-up bytes go first
    used, frame = decode_frame(VOLTAGE_REPLY)
    assert used == len(VOLTAGE_REPLY)
    assert frame == Frame("000000000001", 0x91, h("00 01 01 02 01 22"))
    raw = parse_read_reply(frame, 0x02010100)
    assert raw == h("01 22")
    assert decode_bcd(raw, "XXX.X", signed=False) == 220.1
    assert read_data_reply("000000000001", 0x02010100, raw, preamble=False) == VOLTAGE_REPLY


def test_error_reply_surfaces_the_error_byte() -> None:
    assert error_reply("000000000001", 0x11, 0x02, preamble=False) == NO_DATA_REPLY
    _, frame = decode_frame(NO_DATA_REPLY)
    assert frame is not None
    with pytest.raises(DeviceExceptionError, match="no requested data") as caught:
        parse_read_reply(frame, 0x02010100)
    assert caught.value.code == 0x02


def test_reply_with_another_di_or_control_is_a_protocol_error() -> None:
    other_di = Frame("000000000001", 0x91, h("00 00 01 00 67 45 23 01"))
    with pytest.raises(ProtocolError, match="DI 00010000"):
        parse_read_reply(other_di, 0x02010100)
    wrong_control = Frame("000000000001", 0x93, h("00 01 01 02 01 22"))
    with pytest.raises(ProtocolError, match="0x93"):
        parse_read_reply(wrong_control, 0x02010100)
    follow_up = Frame("000000000001", 0xB1, h("00 01 01 02 01 22"))
    with pytest.raises(ProtocolError, match="follow-up"):
        parse_read_reply(follow_up, 0x02010100)
    no_di = Frame("000000000001", 0x91, h("00 01"))
    with pytest.raises(ProtocolError, match="no DI"):
        parse_read_reply(no_di, 0x02010100)
    long_error = Frame("000000000001", 0xD1, h("02 02"))
    with pytest.raises(ProtocolError, match="one error byte"):
        parse_read_reply(long_error, 0x02010100)


def test_read_address_reply_round_trip() -> None:
    wire = read_address_reply("202411110002", preamble=False)
    _, frame = decode_frame(wire)
    assert frame is not None
    assert frame.control == 0x93
    assert parse_address_reply(frame) == "202411110002"
    lying = Frame("202411110002", 0x93, h("01 00 00 00 00 00"))
    with pytest.raises(ProtocolError, match="different address"):
        parse_address_reply(lying)
    refused = Frame("202411110002", 0xD3, h("01"))
    with pytest.raises(DeviceExceptionError) as caught:
        parse_address_reply(refused)
    assert caught.value.code == 0x01


def test_wildcard_address_matching() -> None:
    assert address_matches("AAAAAAAAAAAA", "000000000001")
    assert address_matches("AAAAAAAA0001", "000000000001")
    assert not address_matches("AAAAAAAA0002", "000000000001")
    assert address_matches("000000000001", "000000000001")
    assert not address_matches("000000000001", "100000000001")
    with pytest.raises(ValueError, match="12 digits"):
        address_matches("1", "000000000001")


# --- resynchronisation, by example ---------------------------------------------------------


def _decode_all(chunks: Iterable[bytes]) -> list[tuple[int, int, Frame]]:
    """Feed chunks as a serial port delivers them, then let the line go quiet.

    Returns (offset in the stream, size, frame) for every frame found.
    """
    buf = bytearray()
    consumed = 0
    out: list[tuple[int, int, Frame]] = []

    def drain(at_end: bool) -> None:
        nonlocal consumed
        while buf:
            used, frame = decode_frame(buf, at_end=at_end)
            if used == 0:
                assert not at_end, "at the end of the line the decoder must always progress"
                assert len(buf) < MAX_FRAME_LEN, "waiting for more than a frame can hold"
                return
            if frame is not None:
                out.append((consumed, used, frame))
            del buf[:used]
            consumed += used

    for chunk in chunks:
        buf += chunk
        drain(at_end=False)
    drain(at_end=True)
    return out


def _frames(chunks: Iterable[bytes]) -> list[Frame]:
    return [frame for _, _, frame in _decode_all(chunks)]


GOOD = Frame("000000000001", 0x91, h("00 01 01 02 01 22"))


def test_bad_checksum_drops_one_byte_and_finds_the_next_frame() -> None:
    bad = bytearray(VOLTAGE_REPLY)
    bad[-2] ^= 0xFF
    assert decode_frame(bad) == (1, None)
    assert _frames([bytes(bad) + WAKEUP + VOLTAGE_REPLY]) == [GOOD]


def test_wrong_closing_byte_is_rejected() -> None:
    bad = bytearray(VOLTAGE_REPLY)
    bad[-1] = 0x17
    assert decode_frame(bad) == (1, None)


def test_oversized_length_is_noise_without_waiting_for_it() -> None:
    header = h("68 01 00 00 00 00 00 68 91") + bytes([MAX_DATA_LEN + 1])
    assert decode_frame(header) == (1, None)
    header = h("68 01 00 00 00 00 00 68 91") + bytes([MAX_DATA_LEN])
    assert decode_frame(header) == (0, None)  # plausible: wait for it


def test_false_start_is_rejected_as_soon_as_the_second_68_is_missing() -> None:
    assert decode_frame(h("68 01 02")) == (0, None)
    assert decode_frame(h("68 01 02 03 04 05 06 07")) == (1, None)


def test_garbage_before_a_frame_is_skipped_up_to_the_next_68() -> None:
    assert decode_frame(h("00 FF FE 12 68 01")) == (4, None)
    assert decode_frame(h("00 FF FE")) == (3, None)


def test_a_false_header_at_the_end_of_the_line_does_not_swallow_the_reply() -> None:
    # Noise "68 x x x x x x" right before a reply makes the reply's own 68 look like the
    # second 68 of a frame whose L is the reply's A1 byte (0x99 = 153): the decoder waits
    # for bytes that never come. When the line goes quiet the candidate is dropped.
    reply = read_data_reply("000000009900", 0x02010100, h("01 22"), preamble=False)
    noise = h("68 00 00 00 00 00 00")
    buf = noise + reply
    assert decode_frame(buf) == (0, None)
    assert _frames([buf]) == [Frame("000000009900", 0x91, h("00 01 01 02 01 22"))]


def test_reader_counts_checksum_errors_and_garbage_but_not_wakeup_bytes() -> None:
    reader = FrameReader()
    bad = bytearray(VOLTAGE_REPLY)
    bad[-2] ^= 0x01
    assert reader.feed(WAKEUP + bytes(bad)) == []
    assert reader.crc_errors == 1
    assert reader.garbage_bytes == len(bad)
    assert reader.feed(WAKEUP + VOLTAGE_REPLY) == [GOOD]
    assert (reader.crc_errors, reader.garbage_bytes) == (1, len(bad))
    assert reader.feed(h("68 01 00")) == []
    assert reader.pending == 3
    assert reader.flush() == []
    assert (reader.pending, reader.garbage_bytes) == (0, len(bad) + 3)


# --- properties ----------------------------------------------------------------------------

addresses = st.binary(min_size=6, max_size=6).map(lambda b: b.hex().upper())
frames = st.builds(
    Frame,
    address=addresses,
    control=st.integers(0, 0xFF),
    data=st.binary(max_size=MAX_DATA_LEN),
)


@given(frame=frames, preamble=st.booleans())
def test_encode_decode_round_trip(frame: Frame, preamble: bool) -> None:
    wire = encode_frame(frame.address, frame.control, frame.data, preamble=preamble)
    assert len(wire) == (4 if preamble else 0) + 12 + len(frame.data)
    assert _decode_all([wire]) == [
        (4 if preamble else 0, len(wire) - (4 if preamble else 0), frame)
    ]


def _chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in pairwise(edges)]


segments = st.tuples(frames, st.binary(max_size=24), st.integers(0, 4))


def _stream(items: list[tuple[Frame, bytes, int]]) -> tuple[bytes, list[tuple[int, int]]]:
    """Garbage, wake-up bytes and a frame per item; returns the garbage spans too."""
    stream = bytearray()
    garbage: list[tuple[int, int]] = []
    for frame, noise, wakeups in items:
        garbage.append((len(stream), len(stream) + len(noise)))
        stream += noise + b"\xfe" * wakeups
        stream += encode_frame(frame.address, frame.control, frame.data, preamble=False)
    return bytes(stream), garbage


def _false_header_possible(stream: bytes, garbage: list[tuple[int, int]]) -> bool:
    """A 68 in the noise with another 68 seven bytes on looks like a frame header; whether
    the bytes after it happen to form a valid checksum is chance (2^-16), so such streams
    have no single right answer and are left to the chunking-invariance property."""
    return any(
        stream[i] == 0x68 and i + 7 < len(stream) and stream[i + 7] == 0x68
        for start, end in garbage
        for i in range(start, end)
    )


@given(items=st.lists(segments, max_size=5), cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_stream_with_noise_decodes_the_same_in_any_chunking(
    items: list[tuple[Frame, bytes, int]], cuts: list[int]
) -> None:
    stream, garbage = _stream(items)
    whole = _decode_all([stream])
    assert _decode_all(_chunked(stream, cuts)) == whole
    if not _false_header_possible(stream, garbage):
        assert [frame for _, _, frame in whole] == [frame for frame, _, _ in items]


@given(items=st.lists(segments, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 10_000)))
@example(items=[(GOOD, h("68 00 68 01 02 03 04 05"), 0)], cuts=[3, 9])
def test_noise_with_false_starts_never_loses_frames_when_no_header_is_faked(
    items: list[tuple[Frame, bytes, int]], cuts: list[int]
) -> None:
    stream, garbage = _stream(items)
    assume(not _false_header_possible(stream, garbage))
    assert _frames(_chunked(stream, cuts)) == [frame for frame, _, _ in items]


@given(frame=frames, preamble=st.booleans(), data=st.data())
def test_one_corrupted_byte_never_passes_the_damaged_frame_off_as_valid(
    frame: Frame, preamble: bool, data: st.DataObject
) -> None:
    wire = encode_frame(frame.address, frame.control, frame.data, preamble=preamble)
    start = 4 if preamble else 0
    pos = data.draw(st.integers(0, len(wire) - 1), label="position")
    new = data.draw(st.integers(0, 0xFF).filter(lambda b: b != wire[pos]), label="new byte")
    damaged = wire[:pos] + bytes([new]) + wire[pos + 1 :]
    found = _decode_all([damaged])
    for offset, size, got in found:
        # Nothing is made up: every frame returned is literally on the line, checksum and all.
        assert damaged[offset : offset + size] == encode_frame(
            got.address, got.control, got.data, preamble=False
        )
    if pos < start:
        if new != 0x68:  # a damaged wake-up byte is noise; the frame is intact
            assert found == [(start, len(wire) - start, frame)]
        return
    for offset, size, _ in found:
        # The damaged frame itself is never accepted. The only frame that may start where
        # it started is a shorter one when L itself was hit: DL/T 645's 8-bit sum cannot
        # protect L, which is why readers check the value length against the DI's format.
        assert offset > start or (offset == start and pos == start + 9 and size < len(wire) - start)


# --- BCD -----------------------------------------------------------------------------------

FORMATS = ["XXX.X", "XXX.XXX", "XX.XXXX", "X.XXX", "XX.XX", "XXXXXX.XX", "XXXX", "XX", "X.X"]


def test_known_bcd_values() -> None:
    assert encode_bcd(220.1, "XXX.X", signed=False) == h("01 22")
    assert encode_bcd(-1.25, "XXX.XXX", signed=True) == h("50 12 80")
    assert encode_bcd(0.2615, "XX.XXXX", signed=True) == h("15 26 00")
    assert encode_bcd(-0.5, "X.XXX", signed=True) == h("00 85")
    assert encode_bcd(50.0, "XX.XX", signed=False) == h("00 50")
    assert encode_bcd(12345.67, "XXXXXX.XX", signed=False) == h("67 45 23 01")
    assert decode_bcd(h("34 12 00 80"), "XXXXXX.XX", signed=True) == -12.34
    # Unsigned: the top bit is a digit, not a sign.
    assert decode_bcd(h("34 12 00 80"), "XXXXXX.XX", signed=False) == 800012.34
    # A "negative zero" reads as 0.0.
    assert math.copysign(1, decode_bcd(h("00 80"), "X.XXX", signed=True)) == 1


def test_rounding_is_half_away_from_zero_on_the_last_digit() -> None:
    assert encode_bcd(220.15, "XXX.X", signed=False) == h("02 22")
    assert encode_bcd(-0.0005, "X.XXX", signed=True) == h("01 80")
    assert encode_bcd(-0.0004, "X.XXX", signed=True) == h("00 00")


@pytest.mark.parametrize(
    ("raw", "fmt", "signed", "message"),
    [
        (h("0A 22"), "XXX.X", False, "not BCD"),
        (h("01 F2"), "XXX.X", False, "not BCD"),
        (h("01 8A"), "XXX.X", True, "not BCD"),  # the sign bit masked off, 0x0A is left
        (h("01"), "XXX.X", False, "takes 2 bytes"),
        (h("01 22 33"), "XXX.X", False, "takes 2 bytes"),
        (h("01 22"), "XX.X", False, "even"),
        (h("01 22"), "XX,XX", False, "'X' digits"),
    ],
)
def test_decode_rejects_what_is_not_bcd(raw: bytes, fmt: str, signed: bool, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_bcd(raw, fmt, signed)


@pytest.mark.parametrize(
    ("value", "fmt", "signed", "message"),
    [
        (-1.0, "XXX.X", False, "negative"),
        (1000.0, "XXX.X", False, "does not fit"),
        (999.95, "XXX.X", False, "does not fit"),  # rounds up to 1000.0
        (800.0, "XXX.XXX", True, "does not fit"),  # the sign bit takes the top digit's 8
        (math.nan, "XX.XX", False, "cannot"),
        (math.inf, "XX.XX", True, "cannot"),
        (1e40, "XX.XX", True, "fit|cannot"),
    ],
)
def test_encode_rejects_what_does_not_fit(
    value: float, fmt: str, signed: bool, message: str
) -> None:
    with pytest.raises(CodecError, match=message):
        encode_bcd(value, fmt, signed)


@given(fmt=st.sampled_from(FORMATS), signed=st.booleans(), data=st.data())
def test_bcd_value_round_trip(fmt: str, signed: bool, data: st.DataObject) -> None:
    layout = parse_format(fmt)
    top = 8 * 10 ** (layout.digits - 1) - 1 if signed else 10**layout.digits - 1
    n = data.draw(st.integers(-top if signed else 0, top), label="scaled value")
    value = n / 10**layout.decimals
    raw = encode_bcd(value, fmt, signed)
    expected = bytearray(bytes.fromhex(f"{abs(n):0{layout.digits}d}")[::-1])
    if n < 0:
        expected[-1] |= 0x80
    assert raw == expected
    assert decode_bcd(raw, fmt, signed) == value


@given(fmt=st.sampled_from(FORMATS), signed=st.booleans(), data=st.data())
def test_bcd_bytes_round_trip(fmt: str, signed: bool, data: st.DataObject) -> None:
    layout = parse_format(fmt)
    digits = data.draw(st.lists(st.integers(0, 9), min_size=layout.digits, max_size=layout.digits))
    if signed:
        digits[0] = min(digits[0], 7)
    negative = signed and any(digits) and data.draw(st.booleans(), label="negative")
    raw = bytearray(bytes.fromhex("".join(map(str, digits)))[::-1])
    if negative:
        raw[-1] |= 0x80
    value = decode_bcd(bytes(raw), fmt, signed)
    assert (value < 0) == negative
    assert encode_bcd(value, fmt, signed) == raw


@given(fmt=st.sampled_from(FORMATS), signed=st.booleans(), data=st.data())
def test_any_value_in_range_rounds_to_the_nearest_step(
    fmt: str, signed: bool, data: st.DataObject
) -> None:
    layout = parse_format(fmt)
    step = 10.0**-layout.decimals
    largest = float(layout.largest(signed)) - step  # leave room for rounding up
    value = data.draw(st.floats(-largest if signed else 0, largest, allow_nan=False))
    got = decode_bcd(encode_bcd(value, fmt, signed), fmt, signed)
    assert abs(got - value) <= step / 2 * (1 + 1e-9)


def test_format_layouts() -> None:
    assert (parse_format("XXX.X").digits, parse_format("XXX.X").decimals) == (4, 1)
    assert parse_format("XXXXXX.XX").length == 4
    assert parse_format("XX.XXXX").length == 3
    assert parse_format("XXXX").decimals == 0
    for bad in ["", ".", "X.", ".XX", "XX.X.X", "NNN.N", "xxx.x", "XXX", "X" * 18]:
        with pytest.raises(ValueError, match="format"):
            parse_format(bad)
