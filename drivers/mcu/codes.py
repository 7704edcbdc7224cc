"""Numbers the protocol gives meaning to (PROTOCOL.md sections 5 and 7), shared by both sides.

Kept apart from the codecs so the host client and the twin name the same constants.
"""

from __future__ import annotations

import enum
from typing import Final


class ErrorCode(enum.IntEnum):
    """``error.code``."""

    BAD_ARGUMENT = 1
    NOT_CONFIGURED = 2
    ALREADY_CONFIGURED = 3
    FALLBACK_ACTIVE = 4
    TRIPPED = 5
    UNKNOWN_COMMAND = 6
    MALFORMED = 7
    CRC_MISMATCH = 8


class EventKind(enum.IntEnum):
    """``event.kind``."""

    BOOT = 1
    DOOR_OPEN = 2
    DOOR_CLOSED = 3
    WATER_DETECTED = 4
    WATER_CLEARED = 5
    LEAKAGE_TRIP = 6
    TILT = 7
    IMPACT = 8
    FALLBACK_ENTERED = 9
    FALLBACK_LEFT = 10
    LEASE_EXPIRED = 11
    TRIP_CLEARED = 12


class LevelSource(enum.IntEnum):
    """``level_state.source``: who decided the lamp level."""

    HOST = 0
    SCHEDULE = 1
    PHOTOCELL = 2
    FALLBACK_LEVEL = 3


class StatusFlag(enum.IntFlag):
    """``status.flags``."""

    CONFIGURED = 0x01
    FALLBACK = 0x02
    CLOCK_VALID = 0x04
    TRIPPED = 0x08


class Photocell(enum.IntEnum):
    """``inputs.photocell``."""

    LIGHT = 0
    DARK = 1
    NOT_FITTED = 2


LEVEL_CHANNEL: Final = 255  # lease_expired's value for the level lease
RELAY_COUNT: Final = 8
EVENT_RING: Final = 16
IDENTIFY_MAX_COUNT: Final = 48
MAX_LEVEL: Final = 100

# Section 7 limits.
HEARTBEAT_MS_RANGE: Final = (100, 600_000)
LEASE_MS_RANGE: Final = (100, 86_400_000)
MAX_DURATION_MS_RANGE: Final = (0, 86_400_000)
MINUTES_PER_DAY: Final = 1440
SCHEDULE_STEPS: Final = 8

# Section 7 boot defaults.
BOOT_FALLBACK_LEVEL: Final = 100
BOOT_TRIP_UA: Final = 30_000
BOOT_TRIP_MASK: Final = 0xFF
BOOT_TILT_CDEG: Final = 500
BOOT_IMPACT_MG: Final = 0
