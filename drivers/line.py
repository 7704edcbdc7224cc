"""Timing of a serial line: what bytes and silences cost on RS-485.

The agent needs it to keep the silence RTU requires between frames; the simulators need it
to answer no sooner than copper would; the benchmarks need it for the wire's lower bound.
One module, so all three count a character the same way.
"""

from __future__ import annotations

from typing import Final

# One character on the wire: start + 8 data + parity slot + stop. Charging the parity slot
# even on 8N1 lines keeps one constant for every line setting and errs on the slow side,
# which is the side clients must cope with anyway.
BITS_PER_CHAR: Final = 11
# Modbus over serial line, 2.5.1.1: above 19200 baud the inter-frame gap is fixed.
_FIXED_GAP_S: Final = 0.00175


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
