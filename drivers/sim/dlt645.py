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
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Final, Self

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
from smartpole.drivers.line import frame_gap_s, reply_delay_s
from smartpole.drivers.sim.faults import SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.pty import PtyEndpoint

log = structlog.get_logger(__name__)

# A pty has no line timing and the loop can delay a read by milliseconds, so the silence
# that settles a half-received frame is never taken shorter than this.
_MIN_LINE_GAP_S: Final = 0.05


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


@dataclass
class SimStats:
    """Counters for rig assertions; ``by_address`` counts requests each meter received."""

    requests: int = 0
    answered: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0
    by_address: dict[str, int] = field(default_factory=dict)


class Dlt645PtyServer:
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
        if baudrate <= 0 or turnaround_s < 0:
            raise ValueError(f"bad timing: baudrate={baudrate} turnaround_s={turnaround_s}")
        self._meters = {normalize_address(a): m for a, m in meters.items()}
        self._baudrate = baudrate
        self._turnaround_s = turnaround_s
        self._faults = {normalize_address(a): FaultMode(f) for a, f in (faults or {}).items()}
        self._rng = random.Random(seed)  # noqa: S311 - line noise, not cryptography
        self._reply_preamble = reply_preamble
        self._line_gap_s = max(frame_gap_s(baudrate), _MIN_LINE_GAP_S)
        self._stats = SimStats()
        self._endpoint: PtyEndpoint | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._pending = 0
        self._idle = asyncio.Event()

    @property
    def path(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("Dlt645PtyServer is not running")
        return self._endpoint.path

    @property
    def stats(self) -> SimStats:
        """A snapshot, so callers can compare before/after without aliasing live counters."""
        return replace(self._stats, by_address=dict(self._stats.by_address))

    def set_fault(self, address: str, mode: FaultMode) -> None:
        """Change a meter's behaviour while running; applies from the next request on."""
        address = normalize_address(address)
        self._faults[address] = FaultMode(mode)
        log.info("sim_fault_set", path=self._path_or_none(), meter=address, fault=str(mode))

    async def drained(self) -> None:
        """Wait until every request received so far has been answered (or left unanswered)."""
        await self._idle.wait()

    async def __aenter__(self) -> Self:
        if self._endpoint is not None:
            raise RuntimeError("Dlt645PtyServer already running")
        self._queue = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0
        endpoint = PtyEndpoint()
        await endpoint.__aenter__()
        self._endpoint = endpoint
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._receive_forever(endpoint), name=f"dlt645-rx {endpoint.path}"),
            loop.create_task(self._serve_forever(endpoint), name=f"dlt645-tx {endpoint.path}"),
        ]
        for task in self._tasks:
            task.add_done_callback(_on_task_done)
        log.info("sim_started", path=endpoint.path, meters=sorted(self._meters))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving; the pty is closed before the first await, so a cancel arriving
        while we wait for the tasks cannot leak descriptors."""
        endpoint, tasks = self._endpoint, self._tasks
        self._endpoint, self._tasks = None, []
        if endpoint is not None:
            endpoint.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
            log.info("sim_stopped", stats=self._stats)

    def _path_or_none(self) -> str | None:
        return self._endpoint.path if self._endpoint is not None else None

    # ----- receive side -----

    async def _receive_forever(self, endpoint: PtyEndpoint) -> None:
        reader = FrameReader()
        while True:
            try:
                async with asyncio.timeout(self._line_gap_s if reader.pending else None):
                    chunk = await endpoint.read()
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
                self._idle.clear()
                self._queue.put_nowait(frame)

    # ----- answer side: one request at a time -----

    async def _serve_forever(self, endpoint: PtyEndpoint) -> None:
        while True:
            request = await self._queue.get()
            try:
                await self._serve(endpoint, request)
            finally:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    async def _serve(self, endpoint: PtyEndpoint, request: Frame) -> None:
        self._stats.requests += 1
        if request.address == BROADCAST_ADDRESS:
            return  # broadcasts (time sync) are never answered
        request_len = len(WAKEUP) + FRAME_OVERHEAD + len(request.data)
        for address, meter in self._meters.items():
            if not address_matches(request.address, address):
                continue
            by_address = self._stats.by_address
            by_address[address] = by_address.get(address, 0) + 1
            fault = self._faults.get(address, FaultMode.NONE)
            reply = self._reply_for(address, meter, request, fault)
            log.debug(
                "sim_request",
                meter=address,
                control=request.control,
                data=request.data.hex(),
                fault=str(fault),
            )
            if reply is None:
                continue
            delay = reply_delay_s(request_len, len(reply), self._baudrate, self._turnaround_s)
            if fault is FaultMode.SLOW:
                delay += SLOW_EXTRA_S
            await asyncio.sleep(delay)  # emulates the meter and the wire, not test sync
            endpoint.write(reply)
            self._stats.answered += 1

    def _reply_for(
        self, address: str, meter: SimulatedMeter, request: Frame, fault: FaultMode
    ) -> bytes | None:
        preamble = self._reply_preamble
        function = request.function
        if request.is_reply or function not in (READ_DATA, READ_ADDRESS):
            return None  # time sync and the functions no simulated meter implements
        if fault is FaultMode.NO_ANSWER:
            return None
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
        if fault is FaultMode.BAD_CRC:
            return reply[:-2] + bytes([reply[-2] ^ 0xFF]) + reply[-1:]
        if fault is FaultMode.GARBAGE:
            return self._rng.randbytes(len(reply))
        return reply


def _on_task_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("sim_task_crashed", task=task.get_name(), exc_info=exc)
