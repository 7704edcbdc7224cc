"""Modbus RTU as a simulated device hears and answers it, on any line.

An RTU request carries no length a device can trust before its CRC checks, and noise can
claim a frame far longer than what follows it; only the line going quiet (the serial
3.5-character gap) says nothing more will complete it. The pty simulator and an RTU
gateway behind TCP listen the same way and spoil their answers the same way, so a rig
sees one device whichever transport it takes.
"""

from __future__ import annotations

import asyncio
from typing import Final

import structlog

from smartpole.drivers.modbus.pdu import ExceptionCode, Request
from smartpole.drivers.modbus.rtu import decode_request, encode_frame
from smartpole.drivers.sim.bus import BusServer, SimStats
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.modbus_bank import RegisterBank, exception_response, handle_pdu
from smartpole.drivers.sim.server import Line

log = structlog.get_logger(__name__)

# The CRC, the last two bytes of every RTU frame: what BAD_CRC inverts.
RTU_CRC: Final = slice(-2, None)


class RtuListener:
    """Takes the requests off one line; counts noise bursts (``bad_frames``) and every
    byte that was no request (``discarded_bytes``) in ``stats``.

    A partial frame waits ``gap_s`` of silence at most before it is given up on, so
    noise that claims a long frame cannot swallow the real request behind it.
    """

    def __init__(self, line: Line, *, gap_s: float, stats: SimStats[int]) -> None:
        self._line = line
        self._gap_s = gap_s
        self._stats = stats
        self._buf = bytearray()
        self._at_end = False  # the line has gone quiet since the last byte arrived
        self._in_noise = False  # one burst of noise counts as one bad frame

    async def next_request(self) -> Request | None:
        """The next whole, CRC-valid request; None once the peer has gone (a TCP line)."""
        while True:
            used, request = decode_request(self._buf, at_end=self._at_end)
            if used == 0:
                if not await self._fill():
                    return None
                continue
            del self._buf[:used]
            if request is not None:
                self._in_noise = False
                return request
            self._stats.discarded_bytes += used
            if not self._in_noise:
                self._in_noise = True
                self._stats.bad_frames += 1
                log.debug("sim_bad_frame", peer=self._line.peer)

    async def _fill(self) -> bool:
        """Read on; only a partial frame waits for the line to go quiet. False at EOF."""
        self._at_end = False
        try:
            async with asyncio.timeout(self._gap_s if self._buf else None):
                chunk = await self._line.read()
        except TimeoutError:
            self._at_end = True
            return True
        if not chunk:
            self._stats.discarded_bytes += len(self._buf)
            return False
        self._buf += chunk
        return True


def device_answer(
    server: BusServer[int], unit: int, bank: RegisterBank, request: Request, fault: FaultMode
) -> bytes | None:
    """One device's RTU answer, from ``unit``, as its ``fault`` leaves it.

    NO_ANSWER (None) and EXCEPTION (exception 4) leave the request unexecuted, as a device
    that is down or refuses would; BAD_CRC and GARBAGE execute it and then spoil the
    answer, as noise on the way back would: the device did the work, the master cannot
    tell.
    """
    if fault is FaultMode.NO_ANSWER:
        return None
    if fault is FaultMode.EXCEPTION:
        return exception_response(unit, request.function, ExceptionCode.SERVER_DEVICE_FAILURE)
    return server.spoil(encode_frame(unit, handle_pdu(bank, request)), fault, checksum=RTU_CRC)


# libmodbus 3.1's RTU server, after a request for another unit, reads the next frame as that
# unit's answer (waiting up to its response timeout, 0.5 s by default) and throws it away.
LIBMODBUS_REPLY_WINDOW_S: Final = 0.5


class LineListeners:
    """Devices that listen to the line the way libmodbus and many RS-485 devices do.

    After a request for another unit, such a device takes the next frame that starts within
    ``window_s`` for that unit's answer and ignores it, whatever it is: a master that asks
    the next unit sooner, after a silent one, is not heard. Any answer on the line is the
    frame they wait for and ends the wait. ``window_s`` 0 is a device that ignores other
    units' traffic altogether.
    """

    def __init__(self, window_s: float) -> None:
        if window_s < 0:
            raise ValueError(f"a reply window is 0 or more seconds, got {window_s}")
        self.window_s = window_s
        self._waiting: dict[int, float] = {}  # device's unit -> until when it waits (monotonic)

    def hears(self, devices: list[int], addressed: set[int], now: float) -> set[int]:
        """Which of ``addressed`` (devices the request is for) take it as a request; every
        other device waiting for an answer takes it for that answer instead."""
        if not self.window_s:
            return addressed
        heard: set[int] = set()
        for unit in devices:
            if self._waiting.pop(unit, 0.0) > now:
                continue  # taken for the answer it waited for
            if unit in addressed:
                heard.add(unit)
            else:
                self._waiting[unit] = now + self.window_s
        return heard

    def answer_seen(self) -> None:
        """A device answered: the others have the answer they waited for."""
        self._waiting.clear()
