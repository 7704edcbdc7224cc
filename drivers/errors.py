"""The drivers' exception family.

Callers above the driver boundary (bus tasks, the CLI) catch these and nothing wider, so a
library's own exceptions (pymodbus, pyserial, OSError) are translated here with
``raise ... from`` and never leak upwards.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error a driver raises."""


class TransportError(DriverError):
    """The port or connection itself is unusable (missing device node, refused, closed)."""


class DeviceTimeoutError(DriverError):
    """The device did not answer within the bus timeout (dead, wrong address, garbled reply)."""


class DeviceExceptionError(DriverError):
    """The device answered with a protocol exception (e.g. Modbus illegal data address)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ProtocolError(DriverError):
    """A reply arrived but could not be understood (wrong length, wrong function)."""


class CodecError(DriverError):
    """Raw data could not be turned into a value or a value into raw data."""


class WriteRejectedError(DriverError):
    """A write the device's profile or the bus does not allow (read-only point, out of its
    limits, a relay held off by a trip); nothing was switched."""
