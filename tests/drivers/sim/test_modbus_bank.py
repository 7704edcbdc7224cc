"""Properties of a simulated device's answers: what the bank serves, refuses and stays
silent about, and that every answer is as long as the PDU layer's length rule says."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from helpers.modbus_strategies import U16, bits, requests
from smartpole.drivers.errors import DriverError
from smartpole.drivers.modbus import pdu
from smartpole.drivers.modbus.crc import append_crc, crc16_modbus
from smartpole.drivers.modbus.pdu import Request
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.rtu import decode_reply, decode_request, encode_request
from smartpole.drivers.sim.modbus_bank import IllegalAddressError, RegisterBank, handle_request

READ_KINDS = {
    1: RegisterKind.COIL,
    2: RegisterKind.DISCRETE,
    3: RegisterKind.HOLDING,
    4: RegisterKind.INPUT,
}


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


@st.composite
def mapped_reads(draw: st.DrawFn) -> tuple[RegisterBank, Request, list[int]]:
    function = draw(st.sampled_from([1, 2, 3, 4]))
    limit = 2000 if function <= 2 else 125
    count = draw(st.integers(1, limit))
    address = draw(st.integers(0, 0x10000 - count))
    kind = READ_KINDS[function]
    values = (
        list(draw(bits(count)))
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


@given(mapped_reads(), st.integers(1, 2000))
def test_a_device_read_limit_answers_exception_3_above_it_and_data_up_to_it(
    case: tuple[RegisterBank, Request, list[int]], limit: int
) -> None:
    bank, req, values = case
    bank.max_read = limit
    frame = handle_request({1: bank}, req)
    if req.count > limit:
        event("refused")
        assert exception_code(frame, req) == pdu.ExceptionCode.ILLEGAL_DATA_VALUE
    else:
        assert frame is not None
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


# ----- the reply length rule -----


@st.composite
def served(draw: st.DrawFn) -> tuple[RegisterBank, Request]:
    """A request and a bank that maps its range (or, sometimes, does not)."""
    quantities = st.one_of(st.integers(1, 125), st.integers(1, 2000), U16)
    req = draw(requests(counts=quantities))
    if req.function == 5 and draw(st.booleans()):
        req = Request(req.unit_id, 5, req.address, 1, (draw(st.sampled_from([0, 0xFF00])),))
    span = max(req.count, 1)
    address = min(req.address, 0x10000 - span)  # a range the address space holds
    bank = RegisterBank()
    kind = pdu.READ_KIND.get(req.function) or pdu.WRITE_KIND[req.function]
    if draw(st.integers(0, 9)) != 9:  # mapped, about nine times in ten
        bank.set(kind, address, [0] * span)
    return bank, Request(1, req.function, address, req.count, req.values, req.byte_count)


@given(served())
def test_every_answer_is_as_long_as_the_rule_predicts(case: tuple[RegisterBank, Request]) -> None:
    bank, req = case
    frame = handle_request({1: bank}, req)
    assert frame is not None
    answer = frame[1:-2]
    if answer[0] & pdu.EXCEPTION_FLAG:
        event("refused")
        assert len(answer) == pdu.EXCEPTION_BYTES
    else:
        event(f"served FC {req.function}")
        assert len(answer) == pdu.reply_size(req)
    assert pdu.response_size(answer) == len(answer)
    assert decode_reply(frame)[0] == len(frame)
