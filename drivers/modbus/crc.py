"""Modbus RTU CRC-16.

Kept separate from pymodbus because the simulators frame bytes themselves (pymodbus keeps
its CRC helpers on a private-ish framer class whose signature has changed between
releases), and because one table-driven function is cheap enough to own outright.
"""

from __future__ import annotations

from typing import Final

_POLY_REFLECTED: Final = 0xA001
_INIT: Final = 0xFFFF


def _build_table() -> tuple[int, ...]:
    # One shift-register step per bit, done once at import so the per-byte loop below
    # is a single lookup: the simulators checksum every byte received.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE: Final = _build_table()


def crc16_modbus(data: bytes) -> int:
    """Return the Modbus CRC-16 of ``data`` as a plain integer (not byte-swapped).

    The integer is the register value; on the wire it travels low byte first, which is
    what :func:`append_crc` does. Running the CRC over a frame *including* its CRC gives 0,
    which is the cheapest way to validate a received frame.
    """
    crc = _INIT
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def append_crc(frame: bytes) -> bytes:
    """Return ``frame`` with its CRC appended low byte first, as RTU puts it on the wire."""
    return frame + crc16_modbus(frame).to_bytes(2, "little")
