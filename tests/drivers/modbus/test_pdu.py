"""Properties of the PDU layer: requests and answers round-trip between the encoders and
the parsers (answers as the simulated devices build them), message lengths agree with the
layouts, and no byte string makes a parser raise anything but ProtocolError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helpers.modbus_strategies import requests
from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.modbus import pdu
from smartpole.drivers.modbus.pdu import Request
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.modbus_bank import RegisterBank, handle_pdu

U16 = st.integers(0, 0xFFFF)
READS = {
    1: RegisterKind.COIL,
    2: RegisterKind.DISCRETE,
    3: RegisterKind.HOLDING,
    4: RegisterKind.INPUT,
}
ALL_FUNCTIONS = [1, 2, 3, 4, 5, 6, 15, 16]


def _served(kind: RegisterKind, address: int, values: list[int]) -> RegisterBank:
    bank = RegisterBank()
    bank.set(kind, address, values)
    return bank


@given(requests())
def test_requests_round_trip_and_tell_their_length_from_their_head(req: Request) -> None:
    body = pdu.encode_request(req)
    assert len(body) <= pdu.MAX_PDU_BYTES
    assert pdu.parse_request(req.unit_id, body) == req
    for end in range(len(body) + 1):
        assert pdu.request_size(body[:end]) in (None, len(body))
    assert pdu.request_size(b"\xaa" + body, 1) == len(body)


@given(st.binary(max_size=300))
@example(b"\x10\x00\x00\x00\x7c\xf8")  # a byte count past the PDU limit
@example(b"\x2b\x0e\x01\x00")  # read device identification: not implemented
def test_arbitrary_bytes_are_a_request_a_refusal_or_too_few(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        pdu.request_size(data)
    with contextlib.suppress(ProtocolError):
        pdu.response_size(data)
    refusal = None
    try:
        req = pdu.parse_request(1, data)
    except pdu.RequestRefusedError as exc:
        refusal = exc.code
    if refusal is not None:
        assert refusal in (pdu.ExceptionCode.ILLEGAL_FUNCTION, pdu.ExceptionCode.ILLEGAL_DATA_VALUE)
    else:
        assert pdu.request_size(data) == len(data)
        assert req.function == data[0]


@pytest.mark.parametrize(
    ("kind", "count", "function"),
    [
        (RegisterKind.COIL, 1, 5),
        (RegisterKind.COIL, 2, 15),
        (RegisterKind.HOLDING, 1, 6),
        (RegisterKind.HOLDING, 3, 16),
    ],
)
def test_write_function_by_kind_and_count(kind: RegisterKind, count: int, function: int) -> None:
    assert pdu.write_function(kind, count) == function


@pytest.mark.parametrize("kind", [RegisterKind.INPUT, RegisterKind.DISCRETE])
def test_read_only_kinds_have_no_write_function(kind: RegisterKind) -> None:
    with pytest.raises(ProtocolError, match="cannot be written"):
        pdu.write_function(kind, 1)


@given(
    st.sampled_from([3, 4]),
    st.integers(0, 0xFFFF - 125),
    st.lists(U16, min_size=1, max_size=125),
)
def test_register_answers_round_trip(function: int, address: int, values: list[int]) -> None:
    bank = _served(READS[function], address, values)
    answer = handle_pdu(bank, Request(1, function, address, len(values)))
    assert pdu.exception_code(answer, function) is None
    assert pdu.parse_registers(answer, function) == values
    assert pdu.parse_registers(bytearray(answer), function) == values


@given(
    st.sampled_from([1, 2]),
    st.integers(0, 0xFFFF - 2000),
    st.lists(st.integers(0, 1), min_size=1, max_size=2000),
)
def test_bit_answers_round_trip_padded_to_whole_bytes(
    function: int, address: int, bits: list[int]
) -> None:
    bank = _served(READS[function], address, bits)
    answer = handle_pdu(bank, Request(1, function, address, len(bits)))
    parsed = pdu.parse_bits(answer, function)
    assert len(parsed) == 8 * ((len(bits) + 7) // 8)
    assert parsed[: len(bits)] == bits
    assert not any(parsed[len(bits) :])


@given(st.data())
def test_write_echoes_round_trip(data: st.DataObject) -> None:
    function = data.draw(st.sampled_from([5, 6, 15, 16]))
    kind = RegisterKind.COIL if function in (5, 15) else RegisterKind.HOLDING
    if function == 5:
        values: tuple[int, ...] = (data.draw(st.sampled_from([0, 0xFF00])),)
        count = 1
    elif function == 6:
        values, count = (data.draw(U16),), 1
    elif function == 15:
        values = tuple(data.draw(st.lists(st.integers(0, 1), min_size=1, max_size=1968)))
        count = len(values)
    else:
        values = tuple(data.draw(st.lists(U16, min_size=1, max_size=123)))
        count = len(values)
    address = data.draw(st.integers(0, 0x10000 - count))
    bank = _served(kind, address, [0] * count)
    answer = handle_pdu(bank, Request(1, function, address, count, values))
    expected = values[0] if function in (5, 6) else count
    assert pdu.parse_write_echo(answer, function) == (address, expected)


@given(st.sampled_from(ALL_FUNCTIONS), st.integers(1, 255))
def test_exception_answers_round_trip(function: int, code: int) -> None:
    answer = pdu.encode_exception(function, code)
    assert pdu.exception_code(answer, function) == code
    error = pdu.exception_error(code, 7)
    assert error.code == code
    assert f"unit 7 answered exception {code}" in str(error)


def test_refusals_of_the_simulator_are_exception_answers() -> None:
    answer = handle_pdu(RegisterBank(), Request(1, 3, 0, 2))
    assert pdu.exception_code(answer, 3) == pdu.ILLEGAL_DATA_ADDRESS
    with pytest.raises(ProtocolError):
        pdu.parse_registers(answer, 3)


@given(st.sampled_from(ALL_FUNCTIONS), st.binary(max_size=300))
@example(3, b"\x03\x03\x00\x01\x02")  # odd byte count
@example(3, b"\x03\x04\x00\x01")  # count promises more than arrived
@example(1, b"\x01")  # no byte count
@example(6, b"\x86")  # exception without its code
@example(6, b"\x86\x02\x00")  # exception with a trailing byte
@example(16, b"\x10\x00\x01\x00")  # short echo
def test_arbitrary_bytes_raise_only_protocol_error(function: int, data: bytes) -> None:
    for parse in (pdu.exception_code, pdu.parse_registers, pdu.parse_bits, pdu.parse_write_echo):
        with contextlib.suppress(ProtocolError):
            parse(data, function)


@given(st.sampled_from([3, 4]), st.binary(max_size=255))
def test_a_register_answer_is_accepted_only_when_its_length_agrees(
    function: int, data: bytes
) -> None:
    answer = bytes([function, len(data)]) + data
    try:
        values = pdu.parse_registers(answer, function)
    except ProtocolError:
        assert len(data) % 2
    else:
        assert len(values) == len(data) // 2
        assert b"".join(v.to_bytes(2, "big") for v in values) == data
