"""The RTU CRC against published vectors and its defining algebra."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.drivers.modbus.crc import append_crc, crc16_modbus


def _bitwise_crc(data: bytes) -> int:
    """The spec's shift-register description, as an independent reference for the table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


@pytest.mark.parametrize(
    ("frame", "crc_on_wire"),
    [
        ("01 03 00 00 00 0A", "C5 CD"),
        ("01 03 00 00 00 01", "84 0A"),
        # MODBUS over Serial Line v1.02, §6.2.2: "02 07" is sent with CRC low 41, high 12.
        ("02 07", "41 12"),
        ("11 03 00 6B 00 03", "76 87"),  # Modbus application protocol's FC3 example, slave 17
    ],
)
def test_known_vectors(frame: str, crc_on_wire: str) -> None:
    data = bytes.fromhex(frame)
    assert append_crc(data) == data + bytes.fromhex(crc_on_wire)
    assert crc16_modbus(data) == int.from_bytes(bytes.fromhex(crc_on_wire), "little")


def test_catalogue_check_value() -> None:
    # CRC-16/MODBUS check value from the CRC catalogue (reveng), input "123456789".
    assert crc16_modbus(b"123456789") == 0x4B37


def test_empty_input_is_the_initial_value() -> None:
    assert crc16_modbus(b"") == 0xFFFF


@given(st.binary(max_size=300))
def test_frame_with_its_crc_has_zero_residue(data: bytes) -> None:
    assert crc16_modbus(append_crc(data)) == 0


@given(st.binary(max_size=300))
def test_table_matches_bitwise_definition(data: bytes) -> None:
    assert crc16_modbus(data) == _bitwise_crc(data)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0), st.integers(1, 255))
def test_single_byte_corruption_is_detected(data: bytes, index: int, flip: int) -> None:
    frame = bytearray(append_crc(data))
    frame[index % len(frame)] ^= flip
    assert crc16_modbus(bytes(frame)) != 0
