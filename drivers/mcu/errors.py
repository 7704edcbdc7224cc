"""Errors of the pole-MCU host side, all in the drivers' family (``smartpole.drivers.errors``).

Callers above the driver boundary catch :class:`~smartpole.drivers.errors.DriverError`;
these subclasses say which of the protocol's failure modes happened, so a bus task can
tell "the MCU is being flashed with firmware we do not speak" from "the line is noisy".
"""

from __future__ import annotations

from smartpole.drivers.errors import DeviceExceptionError, DriverError, ProtocolError
from smartpole.drivers.mcu.codes import ErrorCode


class McuDictionaryError(ProtocolError):
    """The MCU's command dictionary is unusable: not a smartpole-mcu dictionary, or a
    message this host needs is missing or declared with another format."""


class McuVersionError(McuDictionaryError):
    """The MCU declares a protocol version this host does not speak (it may be being
    flashed); the client refuses it and retries identify at a backed-off rate."""

    def __init__(self, message: str, version: object) -> None:
        super().__init__(message)
        self.version = version


class McuCommandError(DeviceExceptionError):
    """The MCU answered a request with ``error``; ``error_code`` is the spec's code (None
    for a number this host does not know) and ``code_name`` its name."""

    def __init__(self, command: str, code: int) -> None:
        self.command = command
        try:
            self.error_code: ErrorCode | None = ErrorCode(code)
        except ValueError:
            self.error_code = None
        self.code_name = (
            self.error_code.name.lower() if self.error_code is not None else f"code_{code}"
        )
        super().__init__(f"MCU refused {command}: {self.code_name} (error {code})", code)


class McuResetError(DriverError):
    """The MCU reset (or the sequence had to be resynchronised) while the request was in
    flight: whether it took effect on the old MCU is unknown, and the new one is being
    re-identified and reconfigured. Retry once the client is connected again."""


class McuConfigError(DriverError, ValueError):
    """A configuration outside the limits of PROTOCOL.md section 7, or one the MCU refused."""
