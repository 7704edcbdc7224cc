"""Properties of the pure MBAP (Modbus TCP) framing: round trips, chunking, broken streams."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.modbus.mbap import (
    MAX_ADU_BYTES,
    MAX_LENGTH,
    MbapRequest,
    decode_request,
    encode_adu,
    encode_request,
    encode_response,
)
from smartpole.drivers.modbus.pdu import Request, parse_request
from smartpole.drivers.modbus.pdu import encode_request as encode_pdu
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.modbus_bank import RegisterBank, handle_pdu, handle_request

U16 = st.integers(0, 0xFFFF)
UNIT = st.integers(0, 255)
# The largest request PDUs that fit the 260-byte ADU: 6 header bytes + 247 data bytes.
MAX_COILS = 8 * 247
MAX_REGISTERS = 247 // 2


def _bits(count: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.integers(0, (1 << count) - 1).map(lambda n: tuple((n >> i) & 1 for i in range(count)))


@st.composite
def requests(draw: st.DrawFn) -> MbapRequest:
    """Any well-formed request of FC 1-6, 15, 16, including ones a device would refuse."""
    tid, unit, function, address = (
        draw(U16),
        draw(UNIT),
        draw(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16])),
        draw(U16),
    )
    common = {"transaction_id": tid, "unit_id": unit, "function": function, "address": address}
    if function <= 4:
        return MbapRequest(**common, count=draw(U16))
    if function in (5, 6):
        return MbapRequest(**common, count=1, values=(draw(U16),))
    if function == 15:
        count = draw(st.integers(0, MAX_COILS))
        return MbapRequest(**common, count=count, values=draw(_bits(count)))
    count = draw(st.integers(0, MAX_REGISTERS))
    values = tuple(draw(st.lists(U16, min_size=count, max_size=count)))
    return MbapRequest(**common, count=count, values=values)


def decode_all(buf: bytes | bytearray) -> tuple[list[MbapRequest], bytearray]:
    """Drive the decoder the way the server does, returning the frames and what is left."""
    rest, found = bytearray(buf), []
    while True:
        used, req = decode_request(rest)
        if req is None:
            assert used == 0
            return found, rest
        del rest[:used]
        found.append(req)


@given(requests())
def test_request_round_trip(req: MbapRequest) -> None:
    frame = encode_request(req)
    assert len(frame) <= MAX_ADU_BYTES
    assert decode_request(frame) == (len(frame), req)


@given(requests())
def test_every_strict_prefix_asks_for_more(req: MbapRequest) -> None:
    frame = encode_request(req)
    for end in range(len(frame)):
        assert decode_request(frame[:end]) == (0, None)


@given(st.lists(requests(), max_size=6), st.data())
def test_arbitrary_chunking_decodes_the_same_requests(
    reqs: list[MbapRequest], data: st.DataObject
) -> None:
    stream = b"".join(encode_request(r) for r in reqs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    buf, found = bytearray(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buf += stream[start:end]
        more, buf = decode_all(buf)
        found += more
    assert found == reqs
    assert buf == b""


@given(requests(), st.integers(1, 0xFFFF))
def test_bad_protocol_id_breaks_the_stream(req: MbapRequest, protocol_id: int) -> None:
    frame = encode_adu(req.transaction_id, req.unit_id, b"\x03\0\0\0\1", protocol_id=protocol_id)
    # Known as soon as the protocol id is in: no waiting for a length that means nothing.
    for end in range(4, len(frame) + 1):
        with pytest.raises(ProtocolError, match="protocol id"):
            decode_request(frame[:end])


@given(U16, st.one_of(st.integers(0, 1), st.integers(MAX_LENGTH + 1, 0xFFFF)))
def test_absurd_length_breaks_the_stream(tid: int, length: int) -> None:
    header = tid.to_bytes(2, "big") + b"\0\0" + length.to_bytes(2, "big")
    with pytest.raises(ProtocolError, match="length"):
        decode_request(header)


@given(requests(), st.binary(min_size=6, max_size=40))
def test_garbage_after_a_frame_still_yields_the_frame_first(req: MbapRequest, noise: bytes) -> None:
    noise = noise[:2] + b"\xff\xff" + noise[4:]  # a protocol id no Modbus peer sends
    frame = encode_request(req)
    assert decode_request(frame + noise) == (len(frame), req)
    with pytest.raises(ProtocolError):
        decode_request(noise)


def test_largest_legal_frames_decode() -> None:
    coils = MbapRequest(
        transaction_id=1, unit_id=1, function=15, count=MAX_COILS, values=(1,) * MAX_COILS
    )
    registers = MbapRequest(
        transaction_id=2,
        unit_id=1,
        function=16,
        count=MAX_REGISTERS,
        values=(0xABCD,) * MAX_REGISTERS,
    )
    assert len(encode_request(coils)) == MAX_ADU_BYTES
    assert decode_request(encode_request(coils))[1] == coils
    assert decode_request(encode_request(registers))[1] == registers
    too_long = MbapRequest(
        transaction_id=3, unit_id=1, function=15, count=MAX_COILS + 8, values=(0,) * 1984
    )
    with pytest.raises(ValueError, match="PDU of 254 bytes"):
        encode_request(too_long)


@pytest.mark.parametrize(
    ("pdu", "error_code"),
    [
        (b"\x03\x00\x00\x00", 3),  # FC3 one byte short
        (b"\x06\x00\x00\x00\x01\x00", 3),  # FC6 one byte long
        (b"\x10\x00\x00\x00\x01\x02\x00", 3),  # FC16 byte count promises more than sent
        (b"\x0f\x00\x00\x00\x08", 3),  # FC15 without its byte count
        (b"\x2b\x0e\x01\x00", 1),  # read device identification: not implemented
        (b"\x83", 1),  # an exception code is no request
    ],
)
def test_malformed_pdu_is_delimited_and_marked(pdu: bytes, error_code: int) -> None:
    frame = encode_adu(0x1234, 9, pdu)
    used, req = decode_request(frame + encode_adu(1, 1, b"\x03\0\0\0\1"))
    assert used == len(frame)
    assert req == MbapRequest(
        transaction_id=0x1234, unit_id=9, function=pdu[0], error_code=error_code
    )


def test_byte_count_disagreeing_with_quantity_is_kept_for_exception_3() -> None:
    # FC16 for 2 registers whose byte count says 2: well delimited, but refused by the device.
    frame = encode_adu(7, 1, bytes([16, 0, 0, 0, 2, 2, 0xAA, 0xBB]))
    _, req = decode_request(frame)
    assert req is not None
    assert (req.count, req.byte_count, req.error_code) == (2, 2, None)
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, [0, 0])
    assert handle_pdu(bank, req.request) == bytes([0x90, 3])


def test_encode_response_layout() -> None:
    assert encode_response(0xBEEF, 0x11, b"\x03\x02\x12\x34") == bytes.fromhex(
        "beef 0000 0005 11 03021234"
    )


@pytest.mark.parametrize(
    ("tid", "unit", "pdu"),
    [(-1, 1, b"\x03"), (0x10000, 1, b"\x03"), (1, 256, b"\x03"), (1, 1, b"")],
)
def test_encode_refuses_what_no_peer_could_send(tid: int, unit: int, pdu: bytes) -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_adu(tid, unit, pdu)


@given(requests())
def test_pdu_helpers_agree_with_rtu_framing(req: MbapRequest) -> None:
    rtu = req.request
    assert parse_request(rtu.unit_id, encode_pdu(rtu)) == rtu
    bank = RegisterBank()
    bank.set(RegisterKind.HOLDING, 0, list(range(200)))
    bank.set(RegisterKind.COIL, 0, [0, 1] * 100)
    served = Request(1, rtu.function, rtu.address % 200, rtu.count, rtu.values)
    frame = handle_request({1: bank}, served)
    assert frame is not None
    assert frame[1:-2] == handle_pdu(bank, served)
