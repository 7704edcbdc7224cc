"""What every simulator shares: the fault modes a rig can inject and the wire's timing.

A pseudo-terminal or a loopback socket delivers bytes instantly; a 9600-baud RS-485 line
does not. Simulators delay their answers by what the copper would cost, so a rig sees
realistic poll cycles and a benchmark can compare the agent against the physical limit.
"""

from __future__ import annotations

import enum
from typing import Final

# One character on the wire: start + 8 data + parity slot + stop. Charging the parity slot
# even on 8N1 lines keeps one constant for every line setting and errs on the slow side,
# which is the side clients must cope with anyway.
BITS_PER_CHAR: Final = 11
SLOW_EXTRA_S: Final = 2.0
# Modbus over serial line, 2.5.1.1: above 19200 baud the inter-frame gap is fixed.
_FIXED_GAP_S: Final = 0.00175


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


def wire_time_s(n_bytes: int, baudrate: int) -> float:
    """Seconds ``n_bytes`` occupy the line, so answers arrive no sooner than on copper."""
    return n_bytes * BITS_PER_CHAR / baudrate


def frame_gap_s(baudrate: int) -> float:
    """The silence that ends an RTU frame: 3.5 characters, or 1.75 ms above 19200 baud."""
    return _FIXED_GAP_S if baudrate > 19200 else 3.5 * BITS_PER_CHAR / baudrate


def reply_delay_s(
    request_bytes: int, reply_bytes: int, baudrate: int, turnaround_s: float
) -> float:
    """From the moment a request is written until its answer is complete, on a real line.

    The request takes its wire time to arrive, the device waits for the inter-frame
    silence before acting on it, thinks for ``turnaround_s``, and the answer takes its own
    wire time. This is also the theoretical lower bound of one transaction.
    """
    return (
        wire_time_s(request_bytes, baudrate)
        + frame_gap_s(baudrate)
        + turnaround_s
        + wire_time_s(reply_bytes, baudrate)
    )
