"""What the technician tools accept on the command line: value types, defaults, exit codes.

The argparse ``type=`` functions here refuse a bad unit id, baud rate or timeout before
anything touches the bus, with a message that says what is allowed.
"""

from __future__ import annotations

import argparse
from typing import Final

COMMANDS: Final = ("scan", "readdress")
EXIT_OK, EXIT_FAILURE = 0, 1
MAX_UNIT: Final = 247  # 0 is broadcast, 248-255 are reserved
BAUDRATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DEFAULT_BAUDS: Final = (2400, 4800, 9600, 19200)
DEFAULT_TIMEOUT_S: Final = 0.1
# Scan: the silence after a request nothing answered. libmodbus (and RS-485 devices that
# listen to the line) take the frame after a request for another unit for its answer for
# up to their response timeout, 0.5 s in libmodbus; 0.1 s more for the device's own
# scheduling and a USB adapter's latency timer.
DEFAULT_QUIET_S: Final = 0.6
DEFAULT_BAUD: Final = 9600
# What Modbus over serial line 1.02, 2.5.1 allows; the port also knows mark and space.
PARITIES: Final = ("E", "N", "O")
# Every option the two commands add to ``diag``, by dest: the daemon's commands refuse them.
OPTIONS: Final = (
    "port", "bauds", "units", "parity", "stopbits", "timeout", "quiet", "thorough", "profile",
    "config", "from_unit", "to_unit", "baud", "new_baud",
)  # fmt: skip


def unit_id(text: str) -> int:
    try:
        unit = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a unit id (1..{MAX_UNIT})") from None
    if not 1 <= unit <= MAX_UNIT:
        raise argparse.ArgumentTypeError(
            f"{unit} is not a unit id: a device's address is 1..{MAX_UNIT}"
        )
    return unit


def unit_list(text: str) -> list[int]:
    """``1-247``, ``1,7,200`` or ``1-10,200``."""
    units: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        first = unit_id(low)
        last = unit_id(high) if sep else first
        if last < first:
            raise argparse.ArgumentTypeError(f"{part!r}: the range goes backwards")
        units.update(range(first, last + 1))
    return sorted(units)


def baudrate(text: str) -> int:
    try:
        rate = int(text)
    except ValueError:
        rate = 0
    if rate not in BAUDRATES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a baud rate ({', '.join(map(str, BAUDRATES))})"
        )
    return rate


def baud_list(text: str) -> list[int]:
    return list(dict.fromkeys(baudrate(part.strip()) for part in text.split(",")))


def timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r}: a timeout is 0 to 10 seconds")
    return value


def quiet(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r}: a quiet period is 0 to 10 seconds")
    return value
