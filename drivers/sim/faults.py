"""The misbehaviour a rig can switch on per simulated device.

Faults are what make a simulator worth more than a loopback: a client's retry, timeout and
resynchronisation paths only run when a device stays silent, answers with a broken
checksum, babbles or answers late. The line's timing, which every simulator also charges,
is in :mod:`smartpole.drivers.line` (the agent needs it too).
"""

from __future__ import annotations

import enum
from typing import Final

SLOW_EXTRA_S: Final = 2.0
# A babbling device sends a burst of junk this often while its connection is open.
BABBLE_EVERY_S: Final = 0.05
BABBLE_BYTES: Final = 16


class FaultMode(enum.StrEnum):
    """Misbehaviour to inject per device.

    NO_ANSWER models a dead device: the request is not executed. BAD_CRC, GARBAGE, SLOW and
    BABBLE execute the request and spoil only the answer, the nasty case where a client's
    retry repeats a write that already happened.

    On a shared serial line a SLOW device does not hold the others up (each slave has its
    own CPU); its late answer goes out whenever it is ready and spoils whatever else is on
    the wire at that moment, as on a real RS-485 pair.
    """

    NONE = "none"
    NO_ANSWER = "no_answer"
    BAD_CRC = "bad_crc"
    EXCEPTION = "exception"  # a protocol error answer (Modbus: exception 4, device failure)
    GARBAGE = "garbage"  # random bytes of the answer's length instead of the answer
    SLOW = "slow"  # answer SLOW_EXTRA_S late, past typical client timeouts
    # random bytes instead of each answer, and bursts of them unasked between requests
    BABBLE = "babble"
