"""The pole MCU emulated on a pseudo-terminal, for hardware-in-the-loop rigs and tests.

:class:`McuEmulator` runs a :class:`~smartpole.drivers.sim.mcu.twin.McuTwin` (the MCU's logic,
deterministic and I/O-free) behind a pty whose ``path`` the agent opens exactly as it would
open the cabinet's UART. The twin ticks every 10 ms of loop time. Both directions of the
line take their wire time at the emulator's baud rate (:mod:`.wire`): a host frame reaches
the twin only when its last byte would have, and the twin's frames reach the host likewise,
one after the other, so round trips and throughput over the emulator are honest.

Faults (:class:`~smartpole.drivers.sim.mcu.wire.Faults`) can be changed at any time: dropped,
corrupted and garbage-prefixed frames in both directions, an extra reply delay, a silent
MCU; :meth:`McuEmulator.reset` reboots the MCU (new ``boot_id``, fresh twin, inputs kept),
optionally cutting the frame it is transmitting. Inputs are set in physical units and
:meth:`McuEmulator.snapshot` gives a JSON-ready view for control sockets. All randomness
comes from one generator seeded at construction, so a rig's run can be reproduced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any, Final

import structlog

from smartpole.drivers.mcu.codes import Photocell
from smartpole.drivers.mcu.dictionary import DICTIONARY_BYTES
from smartpole.drivers.mcu.frame import RX_IDLE_MS, check_frame, encode_frame
from smartpole.drivers.sim.mcu.twin import McuTwin
from smartpole.drivers.sim.mcu.twin_state import Inputs, Outputs, Stats
from smartpole.drivers.sim.mcu.wire import Faults, LineStats, WireLine
from smartpole.drivers.sim.server import Line, SimServer

log = structlog.get_logger(__name__)

TICK_MS: Final = 10


class McuEmulator(SimServer):
    """One emulated MCU on a fresh pty; an async context manager."""

    def __init__(
        self,
        *,
        baudrate: int = 115200,
        seed: int = 0,
        boot_id: int | None = None,
        dictionary: bytes = DICTIONARY_BYTES,
        faults: Faults | None = None,
        inputs: Inputs | None = None,
    ) -> None:
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        super().__init__("mcu")
        self.baudrate = baudrate
        self._rng = random.Random(seed)  # noqa: S311 - line noise, not cryptography
        self._dictionary = bytes(dictionary)
        self._faults = faults or Faults()
        first_boot = boot_id if boot_id is not None else self._rng.getrandbits(32)
        self._twin = McuTwin(first_boot, dictionary=self._dictionary)
        if inputs is not None:
            self._twin.inputs = dataclasses.replace(inputs)
        self._boot_at = 0.0
        self.resets = 0
        self._ticker: asyncio.TimerHandle | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._rx_held = bytearray()
        self._to_mcu = WireLine(
            "to_mcu", baudrate, self._rng, self._into_twin, lambda: self._faults
        )
        self._to_host = WireLine(
            "to_host", baudrate, self._rng, self._onto_pty, lambda: self._faults
        )

    # ----- life cycle: SimServer's hooks --------------------------------------------------

    async def _start(self) -> None:
        await super()._start()
        self._boot_at = asyncio.get_running_loop().time()
        self._schedule_tick(self._boot_at)

    def _release(self) -> None:
        for timer in (self._ticker, self._flush_timer):
            if timer is not None:
                timer.cancel()
        self._ticker = self._flush_timer = None
        self._to_mcu.close()
        self._to_host.close()
        super()._release()

    def _start_fields(self) -> dict[str, object]:
        return {"boot_id": self.boot_id, "baud": self.baudrate}

    def _stop_fields(self) -> dict[str, object]:
        return {"stats": self.snapshot()["line"]}

    async def _converse(self, line: Line) -> None:
        while True:
            self._from_host(await line.read())

    # ----- the MCU ------------------------------------------------------------------------

    @property
    def twin(self) -> McuTwin:
        """The MCU now (a new object after each reset)."""
        return self._twin

    @property
    def boot_id(self) -> int:
        return self._twin.boot_id

    @property
    def now_ms(self) -> int:
        """The MCU's clock: milliseconds of loop time since its boot."""
        return max(0, int((asyncio.get_running_loop().time() - self._boot_at) * 1000))

    @property
    def outputs(self) -> Outputs:
        return self._twin.outputs

    @property
    def mcu_stats(self) -> Stats:
        return self._twin.stats

    @property
    def line_stats(self) -> tuple[LineStats, LineStats]:
        """``(to_mcu, to_host)`` counters of the two directions (copies)."""
        return dataclasses.replace(self._to_mcu.stats), dataclasses.replace(self._to_host.stats)

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        log.info("mcu_emulator_faults", **dataclasses.asdict(faults))

    def set_faults(self, **changes: Any) -> Faults:
        """Change some faults, keep the others: ``set_faults(drop=0.2, delay_s=0.01)``."""
        self.faults = dataclasses.replace(self._faults, **changes)
        return self._faults

    def reset(self, *, mid_frame: bool = False, dictionary: bytes | None = None) -> int:
        """Reboot the MCU: a fresh twin with a new ``boot_id`` (the inputs are the pole's
        and stay). With ``mid_frame`` the frame being transmitted is cut where the reset
        caught it (half of a bare acknowledgement if the line was idle). ``dictionary``
        reflashes the MCU with other dictionary bytes (kept for later resets)."""
        loop = asyncio.get_running_loop()
        partial = self._to_host.cut()
        if mid_frame:
            if partial is None:
                frame = encode_frame(self._twin.expected, b"")
                partial = frame[: len(frame) // 2]
            self._onto_pty(partial)
        if dictionary is not None:
            self._dictionary = bytes(dictionary)
        inputs = dataclasses.replace(self._twin.inputs, accel_peak_mg=0)
        self._twin = McuTwin(self._rng.getrandbits(32), dictionary=self._dictionary)
        self._twin.inputs = inputs
        self._boot_at = loop.time()
        self.resets += 1
        if self._ticker is not None:
            self._ticker.cancel()
            self._schedule_tick(self._boot_at)
        log.info("mcu_emulator_reset", boot_id=self.boot_id, mid_frame=mid_frame)
        self._progress()
        return self.boot_id

    # ----- inputs, in physical units ------------------------------------------------------

    def set_inputs(self, **raw: int) -> None:
        """Set twin inputs by their raw names and units (``leakage_ua=35000``)."""
        inputs = self._twin.inputs
        for name, value in raw.items():
            if not hasattr(inputs, name):
                raise ValueError(f"the MCU has no input {name!r}")
            setattr(inputs, name, int(value))

    def set_door(self, open_: bool) -> None:
        self.set_inputs(door=int(open_))

    def set_water(self, detected: bool) -> None:
        self.set_inputs(water=int(detected))

    def set_photocell(self, dark: bool | None) -> None:
        """True dark, False light, None not fitted."""
        cell = Photocell.NOT_FITTED if dark is None else Photocell.DARK if dark else Photocell.LIGHT
        self.set_inputs(photocell=cell)

    def set_tilt(self, x_deg: float, y_deg: float) -> None:
        self.set_inputs(tilt_x=round(x_deg * 100), tilt_y=round(y_deg * 100))

    def set_leakage(self, ma: float) -> None:
        self.set_inputs(leakage_ua=round(ma * 1000))

    def set_temperature(self, celsius: float) -> None:
        self.set_inputs(temp_cdeg=round(celsius * 100))

    def set_supply(self, volts: float) -> None:
        self.set_inputs(supply_mv=round(volts * 1000))

    def impact(self, g: float) -> None:
        """An acceleration peak, seen by the next tick."""
        self.set_inputs(accel_peak_mg=round(g * 1000))

    def snapshot(self) -> dict[str, Any]:
        """Outputs, inputs, counters and faults, JSON-ready (for control sockets)."""
        outputs = dataclasses.asdict(self._twin.outputs)
        outputs["source"] = self._twin.outputs.source.name.lower()
        to_mcu, to_host = self.line_stats
        return {
            "boot_id": self.boot_id,
            "resets": self.resets,
            "expected_seq": self._twin.expected,
            "last_event": self._twin.last_event,
            "outputs": outputs,
            "inputs": dataclasses.asdict(self._twin.inputs),
            "mcu_stats": dataclasses.asdict(self._twin.stats),
            "heartbeat": self._twin.heartbeat_watch(),
            "line": {"to_mcu": dataclasses.asdict(to_mcu), "to_host": dataclasses.asdict(to_host)},
            "faults": dataclasses.asdict(self._faults),
        }

    # ----- bytes --------------------------------------------------------------------------

    def _from_host(self, data: bytes) -> None:
        """Split the host's bytes into frames (so faults hit whole frames) and put them
        on the host-to-MCU line; bytes that are no frame go as they are."""
        self._rx_held += data
        while self._rx_held:
            result = check_frame(self._rx_held, from_mcu=False)
            if result == 0:
                break
            piece = bytes(self._rx_held[: abs(result)])
            del self._rx_held[: abs(result)]
            if result > 0:
                self._to_mcu.send_frame(piece)
            else:
                self._to_mcu.send_raw(piece)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._rx_held:  # an incomplete frame: the twin's idle rule decides, in time
            self._flush_timer = asyncio.get_running_loop().call_later(
                RX_IDLE_MS / 1000, self._flush_held
            )

    def _flush_held(self) -> None:
        self._flush_timer = None
        held = bytes(self._rx_held)
        self._rx_held.clear()
        self._to_mcu.send_raw(held)

    def _into_twin(self, data: bytes) -> None:
        """Bytes that crossed the host-to-MCU line reach the MCU's UART."""
        if self._faults.silent:
            return
        self._transmit(self._twin.receive(data, self.now_ms))
        self._progress()

    def _transmit(self, data: bytes) -> None:
        """The twin's bytes (whole frames) onto the MCU-to-host line, frame by frame."""
        if not data or self._faults.silent:
            return
        not_before = asyncio.get_running_loop().time() + self._faults.delay_s
        while data:
            length = check_frame(data, from_mcu=True)
            if length <= 0:  # cannot happen: the twin only sends frames
                self._to_host.send_raw(data, not_before=not_before)
                return
            self._to_host.send_frame(data[:length], not_before=not_before)
            data = data[length:]

    def _onto_pty(self, data: bytes) -> None:
        # The MCU speaks unprompted (events, acknowledgements), not only in answer to a
        # read, so it writes to the pty itself rather than through the conversation.
        if self._pty is not None:
            self._pty.write(data)

    def _schedule_tick(self, at: float) -> None:
        self._ticker = asyncio.get_running_loop().call_at(at + TICK_MS / 1000, self._tick, at)

    def _tick(self, previous: float) -> None:
        """Every 10 ms of loop time; a late loop catches up without a burst of ticks."""
        loop = asyncio.get_running_loop()
        self._transmit(self._twin.tick(self.now_ms))
        self._progress()
        following = previous + TICK_MS / 1000
        self._schedule_tick(max(following, loop.time() - TICK_MS / 1000))
