"""Simulated DL/T 645-2007 meters on a pseudo-terminal, for rigs and tests.

Clients open ``.path`` like ``/dev/ttyUSB0`` and run the production stack (pyserial, the
non-blocking reader, the frame decoder) against meters whose values drift per the profile's
``simulation`` section. Answers take as long as they would on copper at the configured baud
rate, and the faults a real bus produces can be switched on and off per meter at run time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Final

import structlog

from smartpole.drivers.dlt645.frame import (
    BROADCAST_ADDRESS,
    FRAME_OVERHEAD,
    READ_ADDRESS,
    READ_DATA,
    WAKEUP,
    ErrorBit,
    Frame,
    FrameReader,
    address_matches,
    decode_bcd,
    encode_bcd,
    error_reply,
    normalize_address,
    read_address_reply,
    read_data_reply,
)
from smartpole.drivers.dlt645.profile import Dlt645PointSpec, Dlt645Profile
from smartpole.drivers.line import frame_gap_s
from smartpole.drivers.sim.bus import BusServer, ReplyTiming
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.server import Line

log = structlog.get_logger(__name__)

# A pty has no line timing and the loop can delay a read by milliseconds, so the silence
# that settles a half-received frame is never taken shorter than this.
_MIN_LINE_GAP_S: Final = 0.05
# The checksum byte of a frame: the last but one, before the end byte 0x16.
_CHECKSUM: Final = slice(-2, -1)


class SimulatedMeter:
    """One meter: a value per profile point, encoded exactly as the meter would send it."""

    def __init__(self, profile: Dlt645Profile, seed: int = 0) -> None:
        self.profile = profile
        self.values: dict[str, float] = {}
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
        self._by_di = {spec.di: name for name, spec in profile.points.items()}
        for name, spec in profile.points.items():
            sim = profile.simulation.get(name)
            self.set_value(name, sim.start if sim is not None else _neutral(spec))

    def set_value(self, point: str, value: float) -> None:
        """Set an engineering value (rounded to the point's layout, as the meter would)."""
        spec = self.profile.points[point]
        self.values[point] = decode_bcd(
            encode_bcd(value, spec.format, spec.signed), spec.format, spec.signed
        )

    def step(self) -> None:
        """Move every simulated point one random step, staying inside its bounds."""
        for name, sim in self.profile.simulation.items():
            if sim.step == 0:
                continue
            low = 0.0 if sim.monotonic else -sim.step
            proposed = self.values[name] + self._rng.uniform(low, sim.step)
            self.set_value(name, min(sim.max, max(sim.min, proposed)))

    def raw(self, di: int) -> bytes | None:
        """The value bytes a "read data" reply carries for ``di``; None if the meter has none."""
        name = self._by_di.get(di)
        if name is None:
            return None
        spec = self.profile.points[name]
        return encode_bcd(self.values[name], spec.format, spec.signed)


def _neutral(spec: Dlt645PointSpec) -> float:
    if spec.valid_range is not None and not spec.valid_range[0] <= 0 <= spec.valid_range[1]:
        return spec.valid_range[0]
    return 0.0


class Dlt645PtyServer(BusServer[str]):
    """Serve ``meters`` (keyed by their 12-digit address) on a fresh pty at ``.path``.

    Requests are answered strictly one after another, like meters sharing a half-duplex
    bus. Broadcasts (address 99..99, e.g. time sync) get no answer. Unknown data
    identifiers get the abnormal reply with error 0x02 (no requested data).
    """

    def __init__(
        self,
        meters: Mapping[str, SimulatedMeter],
        *,
        baudrate: int = 2400,
        turnaround_s: float = 0.02,
        faults: Mapping[str, FaultMode] | None = None,
        seed: int = 0,
        reply_preamble: bool = True,
    ) -> None:
        super().__init__(
            "dlt645",
            timing=ReplyTiming(baudrate, turnaround_s),
            faults=faults,
            key=normalize_address,
            seed=seed,
        )
        self._meters = {normalize_address(a): m for a, m in meters.items()}
        self._reply_preamble = reply_preamble
        self._line_gap_s = max(frame_gap_s(baudrate), _MIN_LINE_GAP_S)
        self._pending = 0

    async def drained(self) -> None:
        """Wait until every request received so far has been answered (or left unanswered)."""
        await self.wait_until(lambda: self._pending == 0, timeout_s=None)

    def _start_fields(self) -> dict[str, object]:
        return {"meters": sorted(self._meters)}

    async def _converse(self, line: Line) -> None:
        queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._pending = 0
        self.spawn(self._answer_forever(line, queue), name=f"dlt645-tx {line.peer}")
        await self._receive_forever(line, queue)

    # ----- receive side -----

    async def _receive_forever(self, line: Line, queue: asyncio.Queue[Frame]) -> None:
        reader = FrameReader()
        while True:
            try:
                async with asyncio.timeout(self._line_gap_s if reader.pending else None):
                    chunk = await line.read()
            except TimeoutError:
                frames = reader.flush()  # the line went quiet mid-frame: settle it
            else:
                frames = reader.feed(chunk)
            self._stats.bad_frames = reader.crc_errors
            self._stats.discarded_bytes = reader.garbage_bytes
            for frame in frames:
                if frame.is_reply:
                    continue  # another slave's answer (or an echo); not for us
                self._pending += 1
                queue.put_nowait(frame)

    # ----- answer side: one request at a time -----

    async def _answer_forever(self, line: Line, queue: asyncio.Queue[Frame]) -> None:
        while True:
            request = await queue.get()
            try:
                await self._serve(line, request)
            finally:
                self._pending -= 1
                self._progress()

    async def _serve(self, line: Line, request: Frame) -> None:
        self._stats.requests += 1
        if request.address == BROADCAST_ADDRESS:
            return  # broadcasts (time sync) are never answered
        request_len = len(WAKEUP) + FRAME_OVERHEAD + len(request.data)
        for address, meter in self._meters.items():
            if not address_matches(request.address, address):
                continue
            self._stats.by_address[address] += 1
            fault = self.fault_of(address)
            log.debug(
                "sim_request",
                meter=address,
                control=request.control,
                data=request.data.hex(),
                fault=str(fault),
            )
            if fault is FaultMode.NO_ANSWER:
                self._stats.ignored += 1
                continue
            reply = self._reply_for(address, meter, request, fault)
            if reply is None:
                continue
            delay = self.timing.delay_s(request_len, len(reply), fault)
            await asyncio.sleep(delay)  # emulates the meter and the wire, not test sync
            if line.write(reply):
                self._stats.answered += 1

    def _reply_for(
        self, address: str, meter: SimulatedMeter, request: Frame, fault: FaultMode
    ) -> bytes | None:
        preamble = self._reply_preamble
        function = request.function
        if request.is_reply or function not in (READ_DATA, READ_ADDRESS):
            return None  # time sync and the functions no simulated meter implements
        if fault is FaultMode.EXCEPTION:
            return error_reply(address, function, ErrorBit.OTHER, preamble=preamble)
        if function == READ_ADDRESS:
            reply = read_address_reply(address, preamble=preamble)
        elif len(request.data) != 4:
            # Block reads with a count (L=5) or a time (L=10) are not simulated.
            reply = error_reply(address, function, ErrorBit.OTHER, preamble=preamble)
        else:
            di = int.from_bytes(request.data, "little")
            value = meter.raw(di)
            if value is None:
                reply = error_reply(
                    address, function, ErrorBit.NO_REQUESTED_DATA, preamble=preamble
                )
            else:
                reply = read_data_reply(address, di, value, preamble=preamble)
        return self.spoil(reply, fault, checksum=_CHECKSUM)
