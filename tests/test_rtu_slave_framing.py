"""Properties of the pure RTU slave: incremental framing, resync, and the answers it builds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.drivers.errors import DriverError
from smartpole.drivers.modbus.crc import append_crc, crc16_modbus
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.rtu_slave import (
    MAX_FRAME_BYTES,
    IllegalAddressError,
    RegisterBank,
    Request,
    decode_request,
    encode_request,
    handle_request,
)

U16 = st.integers(0, 0xFFFF)
UNIT = st.integers(0, 255)
READ_KINDS = {
    1: RegisterKind.COIL,
    2: RegisterKind.DISCRETE,
    3: RegisterKind.HOLDING,
    4: RegisterKind.INPUT,
}


def _bits(count: int) -> st.SearchStrategy[tuple[int, ...]]:
    # One integer rather than a list of count draws keeps 1968-coil writes cheap to generate.
    return st.integers(0, (1 << count) - 1).map(lambda n: tuple((n >> i) & 1 for i in range(count)))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """Any request the framer can carry, including ones the handler must refuse."""
    unit, function, address = (
        draw(UNIT),
        draw(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16])),
        draw(U16),
    )
    if function <= 4:
        return Request(unit, function, address, draw(U16))
    if function in (5, 6):
        return Request(unit, function, address, 1, (draw(U16),))
    if function == 15:
        count = draw(st.integers(0, 8 * (MAX_FRAME_BYTES - 9)))
        return Request(unit, function, address, count, draw(_bits(count)))
    count = draw(st.integers(0, (MAX_FRAME_BYTES - 9) // 2))
    return Request(
        unit, function, address, count, tuple(draw(st.lists(U16, min_size=count, max_size=count)))
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


def parse_read_response(frame: bytes, function: int, count: int) -> list[int]:
    assert crc16_modbus(frame) == 0
    assert frame[1] == function
    data = frame[3:-2]
    assert frame[2] == len(data)
    if function in (1, 2):
        assert len(data) == (count + 7) // 8
        return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]
    assert len(data) == 2 * count
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def exception_code(frame: bytes | None, req: Request) -> int:
    assert frame is not None
    assert crc16_modbus(frame) == 0
    assert len(frame) == 5
    assert frame[:2] == bytes([req.unit_id, req.function | 0x80])
    return frame[2]


# ----- framing -----


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


# ----- handling -----


@st.composite
def mapped_reads(draw: st.DrawFn) -> tuple[RegisterBank, Request, list[int]]:
    function = draw(st.sampled_from([1, 2, 3, 4]))
    limit = 2000 if function <= 2 else 125
    count = draw(st.integers(1, limit))
    address = draw(st.integers(0, 0x10000 - count))
    kind = READ_KINDS[function]
    values = (
        list(draw(_bits(count)))
        if function <= 2
        else draw(st.lists(U16, min_size=count, max_size=count))
    )
    bank = RegisterBank()
    bank.set(kind, address, values)
    return bank, Request(1, function, address, count), values


@given(mapped_reads())
def test_read_round_trip_returns_the_bank_values(
    case: tuple[RegisterBank, Request, list[int]],
) -> None:
    bank, req, values = case
    _, decoded = decode_request(encode_request(req))
    assert decoded is not None
    frame = handle_request({1: bank}, decoded)
    assert frame is not None
    assert frame[0] == 1
    assert parse_read_response(frame, req.function, req.count) == values


def _holding_bank(address: int = 100, count: int = 10) -> RegisterBank:
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, address, [0] * count)
    bank.set(RegisterKind.COIL, address, [0] * count)
    bank.set(RegisterKind.INPUT, address, [7] * count)
    return bank


def test_write_single_register_echoes_and_stores() -> None:
    bank = _holding_bank()
    req = Request(1, 6, 101, 1, (0xBEEF,))
    assert handle_request({1: bank}, req) == encode_request(req)
    assert bank.get(RegisterKind.HOLDING, 101, 1) == [0xBEEF]


@pytest.mark.parametrize(("word", "bit"), [(0xFF00, 1), (0x0000, 0)])
def test_write_single_coil_echoes_and_stores(word: int, bit: int) -> None:
    bank = _holding_bank()
    bank.set(RegisterKind.COIL, 102, [1 - bit])
    req = Request(1, 5, 102, 1, (word,))
    assert handle_request({1: bank}, req) == encode_request(req)
    assert bank.get(RegisterKind.COIL, 102, 1) == [bit]


@pytest.mark.parametrize(
    ("function", "kind", "values"),
    [
        (16, RegisterKind.HOLDING, (1, 2, 0xFFFF)),
        (15, RegisterKind.COIL, (1, 0, 1, 1, 0, 0, 1, 1, 1)),
    ],
)
def test_write_multiple_answers_address_and_quantity(
    function: int, kind: RegisterKind, values: tuple[int, ...]
) -> None:
    bank = _holding_bank()
    req = Request(1, function, 100, len(values), values)
    frame = handle_request({1: bank}, req)
    assert frame == append_crc(bytes([1, function, 0, 100, 0, len(values)]))
    assert bank.get(kind, 100, len(values)) == list(values)


@pytest.mark.parametrize(
    "req",
    [
        Request(1, 3, 50, 1),  # wholly unmapped
        Request(1, 3, 105, 10),  # runs off the end of the block
        Request(1, 4, 0xFFFF, 2),  # past the address space
        Request(1, 6, 200, 1, (1,)),  # write to an unmapped holding register
        Request(1, 16, 109, 2, (1, 2)),  # multi-write straddling the end
        Request(1, 2, 100, 1),  # discrete inputs exist nowhere in this bank
    ],
)
def test_unmapped_addresses_answer_exception_2(req: Request) -> None:
    bank = _holding_bank()
    before = bank.get(RegisterKind.HOLDING, 100, 10)
    assert exception_code(handle_request({1: bank}, req), req) == 2
    assert bank.get(RegisterKind.HOLDING, 100, 10) == before  # refused writes change nothing


@pytest.mark.parametrize(
    "req",
    [
        Request(1, 3, 100, 0),
        Request(1, 3, 100, 126),
        Request(1, 4, 100, 126),
        Request(1, 1, 100, 2001),
        Request(1, 2, 100, 0),
        Request(1, 16, 100, 0),
        Request(1, 16, 100, 124, (0,) * 124),
        Request(1, 15, 100, 1969, (0,) * 1969),
        Request(1, 5, 100, 1, (0x1234,)),  # FC5 only knows 0xFF00 and 0x0000
        Request(1, 16, 100, 2, (1, 2), byte_count=3),
    ],
)
def test_bad_quantities_and_values_answer_exception_3(req: Request) -> None:
    assert exception_code(handle_request({1: _holding_bank()}, req), req) == 3


@pytest.mark.parametrize("function", [7, 8, 17, 0x2B, 0x7F])
def test_unknown_function_answers_exception_1(function: int) -> None:
    req = Request(1, function, 100, 1)
    assert exception_code(handle_request({1: _holding_bank()}, req), req) == 1


def test_unserved_unit_stays_silent() -> None:
    assert handle_request({1: _holding_bank()}, Request(2, 3, 100, 1)) is None


def test_broadcast_applies_writes_silently() -> None:
    banks = {1: _holding_bank(), 2: _holding_bank(), 3: RegisterBank()}
    assert handle_request(banks, Request(0, 6, 100, 1, (42,))) is None
    assert banks[1].get(RegisterKind.HOLDING, 100, 1) == [42]
    assert banks[2].get(RegisterKind.HOLDING, 100, 1) == [42]
    assert handle_request(banks, Request(0, 3, 100, 1)) is None


def test_illegal_address_error_is_a_driver_error_with_code_2() -> None:
    with pytest.raises(IllegalAddressError) as info:
        RegisterBank().get(RegisterKind.HOLDING, 0, 1)
    assert isinstance(info.value, DriverError)
    assert info.value.code == 2


def test_master_cannot_write_read_only_tables() -> None:
    bank = _holding_bank()
    with pytest.raises(IllegalAddressError):
        bank.write(RegisterKind.INPUT, 100, [1])


@pytest.mark.parametrize(
    ("kind", "address", "values"),
    [
        (RegisterKind.COIL, 0, [2]),
        (RegisterKind.HOLDING, 0, [0x10000]),
        (RegisterKind.HOLDING, 0xFFFF, [1, 2]),
        (RegisterKind.INPUT, -1, [1]),
    ],
)
def test_bank_set_rejects_impossible_contents(
    kind: RegisterKind, address: int, values: list[int]
) -> None:
    with pytest.raises(ValueError, match=r"outside|within"):
        RegisterBank().set(kind, address, values)
