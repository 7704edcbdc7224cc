"""What every simulator shares: the fault modes a rig can inject and the wire's timing.

The timing itself lives in ``smartpole.drivers.line`` (the agent needs it too); it is
re-exported here for the simulators.

A pseudo-terminal or a loopback socket delivers bytes instantly; a 9600-baud RS-485 line
does not. Simulators delay their answers by what the copper would cost, so a rig sees
realistic poll cycles and a benchmark can compare the agent against the physical limit.
"""

from __future__ import annotations

import enum
from typing import Final

from smartpole.drivers.line import BITS_PER_CHAR, frame_gap_s, reply_delay_s, wire_time_s

__all__ = [
    "BITS_PER_CHAR",
    "SLOW_EXTRA_S",
    "FaultMode",
    "frame_gap_s",
    "reply_delay_s",
    "wire_time_s",
]

SLOW_EXTRA_S: Final = 2.0


class FaultMode(enum.StrEnum):
    """Misbehaviour to inject per device.

    NO_ANSWER models a dead device: the request is not executed. BAD_CRC, GARBAGE and SLOW
    execute the request and spoil only the answer, the nasty case where a client's retry
    repeats a write that already happened.
    """

    NONE = "none"
    NO_ANSWER = "no_answer"
    BAD_CRC = "bad_crc"
    EXCEPTION = "exception"  # a protocol error answer (Modbus: exception 4, device failure)
    GARBAGE = "garbage"  # random bytes of the answer's length instead of the answer
    SLOW = "slow"  # answer SLOW_EXTRA_S late, past typical client timeouts
