"""What a failed Modbus request was, shared by the TCP client and the pymodbus one.

A technician fixing a bus needs to know whether a device is silent or its wiring is noisy,
so every client classifies a missing answer the same way and the bus task counts it.
"""

from __future__ import annotations

from enum import StrEnum

from smartpole.drivers.errors import DeviceTimeoutError


class ReplyFault(StrEnum):
    """What came back when no valid answer did."""

    NO_ANSWER = "no answer"
    CRC_ERROR = "corrupt reply (CRC error)"
    GARBAGE = "garbage on the line"
    WRONG_UNIT = "reply from another unit"
    WRONG_FUNCTION = "reply with the wrong function code"


class ReplyTimeoutError(DeviceTimeoutError):
    """No valid answer in time; ``fault`` says what, if anything, came instead."""

    def __init__(self, message: str, fault: ReplyFault) -> None:
        super().__init__(message)
        self.fault = fault
