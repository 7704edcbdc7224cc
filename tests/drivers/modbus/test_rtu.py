"""Properties of the RTU framer: requests as a device finds them (incremental, resync) and
answers as a master finds them (resync, and why bytes were not the answer)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from helpers.modbus_strategies import U16, UNIT, requests
from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.modbus import pdu
from smartpole.drivers.modbus.crc import append_crc, crc16_modbus
from smartpole.drivers.modbus.faults import ReplyFault
from smartpole.drivers.modbus.pdu import Request
from smartpole.drivers.modbus.rtu import (
    MAX_FRAME_BYTES,
    ReplyFrame,
    classify_reply,
    decode_request,
    encode_frame,
    encode_request,
    split_replies,
)


def decode_all(buf: bytes | bytearray, *, at_end: bool) -> tuple[list[Request], bytearray]:
    """Drive the decoder the way a transport does, returning the frames and what is left."""
    rest, found = bytearray(buf), []
    while rest:
        used, req = decode_request(rest, at_end=at_end)
        if used == 0:
            break
        assert 0 < used <= len(rest)
        del rest[:used]
        if req is not None:
            found.append(req)
    return found, rest


# ----- requests, as a device finds them -----


@given(requests())
def test_encoded_request_decodes_to_itself(req: Request) -> None:
    frame = encode_request(req)
    assert len(frame) <= MAX_FRAME_BYTES
    assert decode_request(frame) == (len(frame), req)


@given(requests(), st.data())
def test_arbitrary_chunking_decodes_the_same_request(req: Request, data: st.DataObject) -> None:
    frame = encode_request(req)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(frame)), max_size=10)))
    buf, found = bytearray(), []
    for start, end in zip([0, *cuts], [*cuts, len(frame)], strict=True):
        buf += frame[start:end]
        got, buf = decode_all(buf, at_end=False)
        found += got
    assert found == [req]
    assert not buf


@given(requests(), st.binary(max_size=64), st.binary(max_size=64))
def test_frame_hidden_in_garbage_is_found(req: Request, before: bytes, after: bytes) -> None:
    frame = encode_request(req)
    found, rest = decode_all(before + frame + after, at_end=False)
    # Noise may claim a long frame and hold the buffer; the line going silent ends that.
    tail, rest = decode_all(rest, at_end=True)
    assert req in found + tail
    assert not rest


@given(st.binary(max_size=2 * MAX_FRAME_BYTES), st.booleans())
def test_random_bytes_never_raise_and_always_make_progress(buf: bytes, at_end: bool) -> None:
    used, req = decode_request(buf, at_end=at_end)
    assert 0 <= used <= len(buf)
    if req is not None:
        assert used >= 8
    if used == 0:
        # Waiting is only allowed while the buffer is shorter than the longest frame.
        assert len(buf) < MAX_FRAME_BYTES
        assert not at_end or not buf
    _, rest = decode_all(buf, at_end=True)
    assert not rest


def test_need_more_bytes_then_complete() -> None:
    frame = encode_request(Request(1, 3, 0, 1))
    assert decode_request(frame[:5]) == (0, None)
    assert decode_request(frame[:7]) == (0, None)
    assert decode_request(frame)[0] == 8


def test_bad_crc_drops_one_byte() -> None:
    frame = bytearray(encode_request(Request(1, 3, 0, 1)))
    frame[-1] ^= 0xFF
    assert decode_request(frame) == (1, None)


def test_unknown_function_drops_one_byte() -> None:
    assert decode_request(append_crc(bytes([1, 0x2B, 0x0E, 0x01, 0x00]))) == (1, None)


def test_byte_count_beyond_frame_limit_is_garbage() -> None:
    # 9 + 248 > 256: no master may send it, so it must not make the slave wait for it.
    head = bytes([1, 16, 0, 0, 0, 124, 248])
    assert decode_request(head) == (1, None)


def test_line_silence_releases_noise_claiming_a_long_frame() -> None:
    noise = bytes([1, 16, 0, 0, 0, 1, 200])  # promises a 209-byte frame
    real = Request(1, 3, 0x10, 2)
    stream = noise + encode_request(real)
    assert decode_request(stream) == (0, None)
    found, rest = decode_all(stream, at_end=True)
    assert found == [real]
    assert not rest


def test_inconsistent_byte_count_is_kept_for_the_handler() -> None:
    frame = append_crc(bytes([1, 16, 0, 0, 0, 2, 3, 0, 1, 2]))
    used, req = decode_request(frame)
    assert used == len(frame)
    assert req is not None
    assert req.byte_count == 3


# ----- answers, as a master finds them -----


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, ReplyFrame]:
    """An answer frame a device may send (data, write echo or exception) and its meaning."""
    unit, function = draw(UNIT), draw(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]))
    shape = draw(st.sampled_from(["data", "exception"]))
    if shape == "exception":
        code = draw(st.integers(0, 255))
        body = pdu.encode_exception(function, code)
        return encode_frame(unit, body), ReplyFrame(unit, function, code, b"")
    if function <= 4:
        data = draw(st.binary(max_size=pdu.MAX_PDU_BYTES - 2))
        return encode_frame(unit, bytes([function, len(data)]) + data), ReplyFrame(
            unit, function, None, data
        )
    address, value = draw(U16), draw(U16)
    body = pdu.encode_write_echo(function, address, value)
    return encode_frame(unit, body), ReplyFrame(unit, function, None, body[1:])


def _starts_a_frame(raw: bytes, at: int) -> bool:
    """Whether a CRC-valid frame of the length its function code implies starts at ``at``."""
    try:
        size = pdu.response_size(raw, at + 1)
    except ProtocolError:
        return False
    end = at + 3 + (size or 0)
    return size is not None and end <= len(raw) and crc16_modbus(raw[at:end]) == 0


@given(st.lists(st.tuples(st.binary(max_size=12), answers()), max_size=4), st.binary(max_size=12))
def test_answers_are_found_between_noise(
    parts: list[tuple[bytes, tuple[bytes, ReplyFrame]]], tail: bytes
) -> None:
    raw, noise_at = b"", []
    for noise, (frame, _) in parts:
        noise_at += range(len(raw), len(raw) + len(noise))
        raw += noise + frame
    noise_at += range(len(raw), len(raw) + len(tail))
    raw += tail
    # Noise that happens to start a valid frame is a frame: no framer can tell it apart.
    assume(not any(_starts_a_frame(raw, at) for at in noise_at))
    frames, noise = split_replies(raw)
    assert frames == [meaning for _, (_, meaning) in parts]
    assert noise == len(noise_at)


@given(st.binary(max_size=2 * MAX_FRAME_BYTES))
def test_any_bytes_split_into_frames_and_noise_that_add_up(raw: bytes) -> None:
    frames, noise = split_replies(raw)
    framed = 0
    for frame in frames:
        assert frame.function < 0x80
        if frame.exception is not None:
            assert not frame.data
            framed += 5
        else:
            framed += 4 + len(frame.data) + (frame.function in pdu.READ_KIND)
    assert noise + framed == len(raw)


def test_frames_are_found_behind_noise_and_each_other() -> None:
    late = append_crc(bytes([1, 3, 2, 0, 0x38]))
    answer = append_crc(bytes([2, 0x83, 2]))
    frames, noise = split_replies(b"\x00\xff" + late + answer + b"\x07")
    assert [(f.unit, f.function, f.exception, f.data) for f in frames] == [
        (1, 3, None, b"\x00\x38"),
        (2, 3, 2, b""),
    ]
    assert noise == 3


def test_an_answer_cut_short_is_noise() -> None:
    answer = encode_frame(1, pdu.encode_read_response(3, [1, 2]))
    assert split_replies(answer[:-1]) == ([], len(answer) - 1)


# ----- why bytes were not the answer -----


def _spoilt(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        (encode_frame(2, pdu.encode_read_response(3, [7])), ReplyFault.WRONG_UNIT),
        (encode_frame(1, pdu.encode_read_response(4, [7])), ReplyFault.WRONG_FUNCTION),
        (encode_frame(1, pdu.encode_exception(4, 2)), ReplyFault.WRONG_FUNCTION),
        (b"\x55" + encode_frame(9, pdu.encode_exception(3, 2)), ReplyFault.WRONG_UNIT),
        (_spoilt(encode_frame(1, pdu.encode_read_response(3, [7]))), ReplyFault.CRC_ERROR),
        (_spoilt(encode_frame(1, pdu.encode_exception(3, 4))), ReplyFault.CRC_ERROR),
        (b"\x01\x03\x02", ReplyFault.GARBAGE),  # our header, too short to be an answer
        (b"\xff\x00\x13\x37\x42", ReplyFault.GARBAGE),
    ],
)
def test_classification(raw: bytes, fault: ReplyFault) -> None:
    assert classify_reply(raw, 1, 3) is fault


@given(st.binary(max_size=2 * MAX_FRAME_BYTES), UNIT, st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]))
def test_any_bytes_get_a_fault(raw: bytes, unit: int, function: int) -> None:
    assert classify_reply(raw, unit, function) in ReplyFault


@given(answers(), st.binary(max_size=12), st.binary(max_size=12))
def test_another_units_answer_in_noise_is_told_apart(
    answer: tuple[bytes, ReplyFrame], before: bytes, after: bytes
) -> None:
    frame, meaning = answer
    raw = before + frame + after
    noise_at = [*range(len(before)), *range(len(before) + len(frame), len(raw))]
    assume(not any(_starts_a_frame(raw, at) for at in noise_at))
    unit = (meaning.unit + 1) % 256
    assert classify_reply(raw, unit, meaning.function) is ReplyFault.WRONG_UNIT
    other = 3 if meaning.function != 3 else 4
    assert classify_reply(raw, meaning.unit, other) is ReplyFault.WRONG_FUNCTION
