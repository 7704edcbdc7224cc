"""Pelco-D framing and commands: pure (no I/O, no clock), so every rule is testable byte by byte.

A frame is seven bytes::

    FF  address  cmd1  cmd2  data1  data2  checksum      checksum = sum(address..data2) % 256

*Standard* commands have bit 0 of ``cmd2`` clear and carry motion bits: ``cmd2`` 0x02 pan
right, 0x04 pan left, 0x08 tilt up, 0x10 tilt down, 0x20 zoom tele, 0x40 zoom wide, 0x80
focus far; ``data1`` is the pan speed 0x00 (stop) .. 0x3F, or 0xFF "turbo"; ``data2`` the
tilt speed 0x00 .. 0x3F. A new standard command replaces the previous motion, and the
all-zero command stops everything.

*Extended* commands have bit 0 of ``cmd2`` set and ``cmd1`` = 0: 0x03 set preset, 0x05
clear preset, 0x07 go to preset (``data2`` = preset number), and, on cameras that support
absolute positioning, 0x4B/0x4D set pan/tilt position and 0x51/0x53 query pan/tilt
position, which the camera answers with an extended response ``FF addr 00 59 MSB LSB ck``
(pan) or ``... 00 5B ...`` (tilt); positions are hundredths of a degree, 0..35999.

Preset numbers go on the wire as one byte, so 1..255 are accepted here. Many cameras give
some numbers a special meaning (e.g. calling 95 opens the on-screen menu on most domes,
33 flips the head, 34 returns to pan zero); which ones is per model, so that check lives in
the profile (``PelcoDProfile.reserved_presets``), not here.

Pelco-D defines no transaction id: a reply is recognised only by its address and
response code. The decoder below is honest rather than clever: a checksum-valid window
that starts with 0xFF is returned for exactly what its bytes say, whatever it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

SYNC: Final = 0xFF
FRAME_LEN: Final = 7
MAX_SPEED: Final = 0x3F
TURBO: Final = 0xFF
FULL_TURN: Final = 36000  # hundredths of a degree

# cmd2 bits of a standard command
PAN_RIGHT: Final = 0x02
PAN_LEFT: Final = 0x04
TILT_UP: Final = 0x08
TILT_DOWN: Final = 0x10
ZOOM_TELE: Final = 0x20
ZOOM_WIDE: Final = 0x40
FOCUS_FAR: Final = 0x80

# cmd2 of extended commands (cmd1 = 0)
SET_PRESET: Final = 0x03
CLEAR_PRESET: Final = 0x05
GO_TO_PRESET: Final = 0x07
SET_PAN_POSITION: Final = 0x4B
SET_TILT_POSITION: Final = 0x4D
QUERY_PAN: Final = 0x51
QUERY_TILT: Final = 0x53
PAN_POSITION_REPLY: Final = 0x59
TILT_POSITION_REPLY: Final = 0x5B

Axis = Literal["pan", "tilt"]
REPLY_OF_QUERY: Final[dict[int, int]] = {
    QUERY_PAN: PAN_POSITION_REPLY,
    QUERY_TILT: TILT_POSITION_REPLY,
}
_AXIS_OF_REPLY: Final[dict[int, Axis]] = {PAN_POSITION_REPLY: "pan", TILT_POSITION_REPLY: "tilt"}
_EXTENDED_NAMES: Final[dict[int, str]] = {
    SET_PRESET: "set_preset",
    CLEAR_PRESET: "clear_preset",
    GO_TO_PRESET: "go_to_preset",
    SET_PAN_POSITION: "set_pan",
    SET_TILT_POSITION: "set_tilt",
    QUERY_PAN: "query_pan",
    QUERY_TILT: "query_tilt",
    PAN_POSITION_REPLY: "pan_reply",
    TILT_POSITION_REPLY: "tilt_reply",
}


@dataclass(frozen=True, slots=True)
class Command:
    """One frame's payload, exactly as on the wire (every field one byte)."""

    address: int
    cmd1: int
    cmd2: int
    data1: int = 0
    data2: int = 0

    def __post_init__(self) -> None:
        for name in ("address", "cmd1", "cmd2", "data1", "data2"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise ValueError(f"Pelco-D {name} must be one byte 0..255, got {value!r}")

    @property
    def is_extended(self) -> bool:
        return bool(self.cmd2 & 0x01)

    @property
    def word(self) -> int:
        """data1/data2 as one big-endian 16-bit value (positions in set/reply frames)."""
        return (self.data1 << 8) | self.data2

    @property
    def kind(self) -> str:
        """A short name for logs and statistics: "stop", "move", "go_to_preset", ..."""
        if not self.is_extended:
            if self.cmd2 == 0 and self.cmd1 == 0 and self.data1 == 0 and self.data2 == 0:
                return "stop"
            return "move"
        if self.cmd1 != 0:
            return "other"
        return _EXTENDED_NAMES.get(self.cmd2, "other")


def checksum(payload: bytes | bytearray) -> int:
    """The Pelco-D checksum of address..data2 (the five bytes between sync and checksum)."""
    return sum(payload) & 0xFF


def encode(cmd: Command) -> bytes:
    payload = bytes([cmd.address, cmd.cmd1, cmd.cmd2, cmd.data1, cmd.data2])
    return bytes([SYNC]) + payload + bytes([checksum(payload)])


def decode(buf: bytes | bytearray) -> tuple[int, Command | None]:
    """Find the frame at the start of ``buf``, incrementally.

    Returns ``(0, None)`` for "need more bytes", ``(n, None)`` for "drop n bytes and call
    again", ``(7, command)`` for a whole frame with a good checksum. Bytes before the next
    0xFF cannot start a frame and are dropped together; a 0xFF whose frame has a bad
    checksum costs exactly one byte, so a good frame hidden behind noise is still found.
    A caller can tell the two drops apart by ``buf[0] == SYNC`` (a bad checksum).
    """
    if not buf:
        return 0, None
    if buf[0] != SYNC:
        nxt = buf.find(SYNC)
        return (len(buf) if nxt < 0 else nxt), None
    if len(buf) < FRAME_LEN:
        return 0, None
    if checksum(buf[1:6]) != buf[6]:
        return 1, None
    return FRAME_LEN, Command(buf[1], buf[2], buf[3], buf[4], buf[5])


# ----- builders ---------------------------------------------------------------------------


def _check_address(address: int) -> None:
    if isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= 0xFF:
        raise ValueError(f"Pelco-D camera address must be 1..255, got {address!r}")


def _check_preset(preset: int) -> None:
    if isinstance(preset, bool) or not isinstance(preset, int) or not 1 <= preset <= 0xFF:
        raise ValueError(f"Pelco-D preset number must be 1..255, got {preset!r}")


def _check_position(axis: str, hundredths: int) -> None:
    if (
        isinstance(hundredths, bool)
        or not isinstance(hundredths, int)
        or not 0 <= hundredths < FULL_TURN
    ):
        raise ValueError(
            f"{axis} position must be 0..35999 hundredths of a degree, got {hundredths!r}"
        )


def _speed(axis: str, value: float) -> int:
    """Map a signed fraction of full speed to a speed byte 1..0x3F (0 only for 0.0)."""
    if not isinstance(value, int | float) or math.isnan(value) or not -1.0 <= value <= 1.0:
        raise ValueError(f"{axis} speed must be a number in -1..1, got {value!r}")
    if value == 0:
        return 0
    # Speed byte 0 means "stop" on the wire, so any non-zero request moves at least at 1.
    return max(1, round(abs(value) * MAX_SPEED))


def stop(address: int) -> Command:
    _check_address(address)
    return Command(address, 0, 0, 0, 0)


def pan_tilt(
    address: int, pan: float, tilt: float, *, zoom: int = 0, turbo: bool = False
) -> Command:
    """One motion frame; it replaces whatever the camera was doing.

    ``pan`` > 0 pans right, < 0 left; ``tilt`` > 0 tilts up, < 0 down; magnitudes are
    fractions of full speed (0x3F). ``zoom`` +1 zooms tele (in), -1 wide (out). ``turbo``
    sends pan speed 0xFF when ``|pan|`` is 1. All zero is the stop command.
    """
    _check_address(address)
    if zoom not in (-1, 0, 1) or isinstance(zoom, bool):
        raise ValueError(f"zoom must be -1 (wide), 0 or +1 (tele), got {zoom!r}")
    pan_speed, tilt_speed = _speed("pan", pan), _speed("tilt", tilt)
    cmd2 = 0
    if pan_speed:
        cmd2 |= PAN_RIGHT if pan > 0 else PAN_LEFT
        if turbo and abs(pan) == 1.0:
            pan_speed = TURBO
    if tilt_speed:
        cmd2 |= TILT_UP if tilt > 0 else TILT_DOWN
    if zoom:
        cmd2 |= ZOOM_TELE if zoom > 0 else ZOOM_WIDE
    return Command(address, 0, cmd2, pan_speed, tilt_speed)


def set_preset(address: int, preset: int) -> Command:
    _check_address(address)
    _check_preset(preset)
    return Command(address, 0, SET_PRESET, 0, preset)


def clear_preset(address: int, preset: int) -> Command:
    _check_address(address)
    _check_preset(preset)
    return Command(address, 0, CLEAR_PRESET, 0, preset)


def go_to_preset(address: int, preset: int) -> Command:
    _check_address(address)
    _check_preset(preset)
    return Command(address, 0, GO_TO_PRESET, 0, preset)


def query_pan(address: int) -> Command:
    _check_address(address)
    return Command(address, 0, QUERY_PAN)


def query_tilt(address: int) -> Command:
    _check_address(address)
    return Command(address, 0, QUERY_TILT)


def set_pan(address: int, hundredths: int) -> Command:
    """Absolute pan, hundredths of a degree 0..35999 (only cameras with positioning)."""
    _check_address(address)
    _check_position("pan", hundredths)
    return Command(address, 0, SET_PAN_POSITION, hundredths >> 8, hundredths & 0xFF)


def set_tilt(address: int, hundredths: int) -> Command:
    """Absolute tilt, raw 0..35999; what 0 and the sign mean is per camera model."""
    _check_address(address)
    _check_position("tilt", hundredths)
    return Command(address, 0, SET_TILT_POSITION, hundredths >> 8, hundredths & 0xFF)


def position_reply(address: int, axis: Axis, hundredths: int) -> Command:
    """The camera's answer to a position query (the simulator builds these)."""
    _check_address(address)
    _check_position(axis, hundredths)
    cmd2 = PAN_POSITION_REPLY if axis == "pan" else TILT_POSITION_REPLY
    return Command(address, 0, cmd2, hundredths >> 8, hundredths & 0xFF)


def parse_position_reply(cmd: Command) -> tuple[Axis, int]:
    """``(axis, hundredths)`` of a position reply; ValueError for anything else."""
    axis = _AXIS_OF_REPLY.get(cmd.cmd2)
    if axis is None or cmd.cmd1 != 0:
        raise ValueError(
            f"not a position reply: cmd1={cmd.cmd1:#04x} cmd2={cmd.cmd2:#04x} "
            f"(expected cmd1 0x00, cmd2 0x59 or 0x5b)"
        )
    if cmd.word >= FULL_TURN:
        raise ValueError(f"{axis} position {cmd.word} is outside 0..35999 hundredths")
    return axis, cmd.word


def angular_distance(a: int, b: int) -> int:
    """Shortest distance between two positions on the circle, in hundredths (0..18000)."""
    d = (a - b) % FULL_TURN
    return min(d, FULL_TURN - d)
