"""Simulated Pelco-D PTZ cameras on a pseudo-terminal, for rigs and tests.

A camera's head moves at the speeds of its profile. Nothing ticks in the background: the
position is computed from the time elapsed since the last command, so an idle simulator
costs nothing and a query at any instant sees exactly where the head is.

Conventions of the simulated head (real models differ, see the profile):

* positions are hundredths of a degree 0..35999 on both axes and wrap around; moves to a
  target take the shorter way round;
* "tilt down" increases the tilt value (0 = horizon, 9000 = straight down, values above
  18000 are above the horizon); the simulated tilt has no mechanical end stops;
* manual moves run at ``pan_speed_deg_s * speed / 0x3F`` on each axis (tilt uses the pan
  figure too), turbo and preset/absolute moves at ``preset_speed_deg_s``;
* presets outside ``1..max_preset`` or listed as reserved are not stored, and calling
  an undefined preset is ignored, as real domes do;
* without ``supports_position_query`` the camera ignores 0x4B/0x4D/0x51/0x53.

Faults (``drivers/sim/faults.FaultMode``), per address, changeable at run time:
NO_ANSWER ignores every command (a dead camera); BAD_CRC, GARBAGE and SLOW execute the
command and spoil only the answer (inverted checksum; random bytes of the answer's length;
the answer ``SLOW_EXTRA_S`` late). Pelco-D has no error answer, so EXCEPTION behaves
exactly like NO_ANSWER.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import structlog

from smartpole.drivers.pelco_d import protocol
from smartpole.drivers.pelco_d.profile import PelcoDProfile
from smartpole.drivers.pelco_d.protocol import FULL_TURN, Command
from smartpole.drivers.sim.bus import BusServer, ReplyTiming
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.server import Line

log = structlog.get_logger(__name__)

_SILENT_FAULTS: Final = frozenset({FaultMode.NO_ANSWER, FaultMode.EXCEPTION})
_CHECKSUM: Final = slice(-1, None)  # the last byte of a frame


def _signed_delta(start: float, target: float) -> float:
    """The shorter way from ``start`` to ``target`` on the circle, in hundredths."""
    d = (target - start) % FULL_TURN
    return d - FULL_TURN if d > FULL_TURN / 2 else d


@dataclass
class _Axis:
    """One axis: where it was at ``since``, and either a velocity or a target to reach."""

    origin: float = 0.0
    since: float = 0.0
    velocity: float = 0.0  # hundredths per second, signed; used when target is None
    target: float | None = None
    speed: float = 0.0  # hundredths per second towards target

    def at(self, now: float) -> float:
        elapsed = max(0.0, now - self.since)
        if self.target is None:
            return (self.origin + self.velocity * elapsed) % FULL_TURN
        delta = _signed_delta(self.origin, self.target)
        step = min(abs(delta), self.speed * elapsed)
        return (self.origin + (step if delta >= 0 else -step)) % FULL_TURN

    def moving(self, now: float) -> bool:
        if self.target is None:
            return self.velocity != 0
        return abs(_signed_delta(self.at(now), self.target)) > 1e-9

    def hold(self, now: float) -> None:
        self.origin, self.since, self.velocity, self.target = self.at(now), now, 0.0, None

    def run(self, now: float, velocity: float) -> None:
        self.hold(now)
        self.velocity = velocity

    def go(self, now: float, target: float, speed: float) -> None:
        self.hold(now)
        self.target, self.speed = target % FULL_TURN, speed


class SimulatedCamera:
    """One camera head. Pure apart from the ``now`` the caller passes (loop time)."""

    def __init__(self, profile: PelcoDProfile, *, pan: int = 0, tilt: int = 0) -> None:
        self.profile = profile
        self._pan = _Axis(origin=pan % FULL_TURN)
        self._tilt = _Axis(origin=tilt % FULL_TURN)
        self.presets: dict[int, tuple[int, int]] = {}

    def position(self, now: float) -> tuple[int, int]:
        """``(pan, tilt)`` in whole hundredths of a degree at time ``now``."""
        return _whole(self._pan.at(now)), _whole(self._tilt.at(now))

    def moving(self, now: float) -> bool:
        return self._pan.moving(now) or self._tilt.moving(now)

    def apply(self, cmd: Command, now: float) -> Command | None:
        """Execute ``cmd`` at ``now``; return the answer frame, if the command has one."""
        if not cmd.is_extended:
            self._manual(cmd, now)
            return None
        if cmd.cmd1 != 0:
            return None
        profile, preset = self.profile, cmd.data2
        if cmd.cmd2 == protocol.SET_PRESET:
            if profile.preset_problem(preset) is None:
                self.presets[preset] = self.position(now)
        elif cmd.cmd2 == protocol.CLEAR_PRESET:
            self.presets.pop(preset, None)
        elif cmd.cmd2 == protocol.GO_TO_PRESET:
            if preset in self.presets:
                self.go_to(now, *self.presets[preset])
        elif not profile.supports_position_query:
            return None
        elif cmd.cmd2 == protocol.SET_PAN_POSITION and cmd.word < FULL_TURN:
            self._pan.go(now, cmd.word, self._preset_speed)
        elif cmd.cmd2 == protocol.SET_TILT_POSITION and cmd.word < FULL_TURN:
            self._tilt.go(now, cmd.word, self._preset_speed)
        elif cmd.cmd2 == protocol.QUERY_PAN:
            return protocol.position_reply(cmd.address, "pan", self.position(now)[0])
        elif cmd.cmd2 == protocol.QUERY_TILT:
            return protocol.position_reply(cmd.address, "tilt", self.position(now)[1])
        return None

    def go_to(self, now: float, pan: int, tilt: int) -> None:
        self._pan.go(now, pan, self._preset_speed)
        self._tilt.go(now, tilt, self._preset_speed)

    @property
    def _preset_speed(self) -> float:
        return self.profile.preset_speed_deg_s * 100

    def _manual_speed(self, byte: int) -> float:
        if byte == protocol.TURBO:
            return self._preset_speed
        return self.profile.pan_speed_deg_s * 100 * min(byte, protocol.MAX_SPEED) / 0x3F

    def _manual(self, cmd: Command, now: float) -> None:
        pan_dir = _direction(cmd.cmd2, protocol.PAN_RIGHT, protocol.PAN_LEFT)
        tilt_dir = _direction(cmd.cmd2, protocol.TILT_DOWN, protocol.TILT_UP)
        self._pan.run(now, pan_dir * self._manual_speed(cmd.data1))
        self._tilt.run(now, tilt_dir * self._manual_speed(cmd.data2))


def _direction(cmd2: int, positive: int, negative: int) -> int:
    """+1, -1, or 0 when neither or both (contradictory) bits are set."""
    return (1 if cmd2 & positive else 0) - (1 if cmd2 & negative else 0)


def _whole(hundredths: float) -> int:
    return round(hundredths) % FULL_TURN


class PelcoDPtyServer(BusServer[int]):
    """Serve ``cameras`` (by address) on a fresh pty whose slave path is ``.path``.

    Answers go out on timers rather than in turn, so a camera keeps taking commands while
    one is on its way, as a real dome's processor does.
    """

    def __init__(
        self,
        cameras: Mapping[int, SimulatedCamera],
        *,
        baudrate: int = 2400,
        turnaround_s: float = 0.0,
        faults: Mapping[int, FaultMode] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            "pelco-d", timing=ReplyTiming(baudrate, turnaround_s), faults=faults, seed=seed
        )
        self.cameras = cameras
        self._timers: set[asyncio.TimerHandle] = set()

    async def wait_received(self, count: int) -> None:
        """Until ``stats.requests`` reaches ``count``: rigs wait on the simulator's progress
        instead of sleeping."""
        await self.wait_until(lambda: self._stats.requests >= count, timeout_s=None)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def _start_fields(self) -> dict[str, object]:
        return {"cameras": sorted(self.cameras)}

    def _release(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        super()._release()

    async def _converse(self, line: Line) -> None:
        rx = bytearray()
        while True:
            rx += await line.read()
            while rx:
                used, cmd = protocol.decode(rx)
                if used == 0:
                    break
                if cmd is None and rx[0] == protocol.SYNC:
                    self._stats.bad_frames += 1
                if cmd is None:
                    self._stats.discarded_bytes += used
                del rx[:used]
                if cmd is not None:
                    self._handle(line, cmd)
            self._progress()

    def _handle(self, line: Line, cmd: Command) -> None:
        self._stats.requests += 1
        camera = self.cameras.get(cmd.address)
        if camera is None:
            return  # another device's address: a bus stays silent
        self._stats.by_address[cmd.address] += 1
        fault = self.fault_of(cmd.address)
        if fault in _SILENT_FAULTS:
            self._stats.ignored += 1
            return
        self._stats.by_kind[cmd.kind] += 1
        reply = camera.apply(cmd, self.now())
        log.debug("pelco_sim_command", address=cmd.address, kind=cmd.kind, fault=str(fault))
        if reply is None:
            return
        frame = self.spoil(protocol.encode(reply), fault, checksum=_CHECKSUM)
        delay = self.timing.delay_s(protocol.FRAME_LEN, len(frame), fault)
        # Answers go out on a timer, so the camera keeps taking commands meanwhile.
        timer: asyncio.TimerHandle | None = None

        def send() -> None:
            if timer is not None:
                self._timers.discard(timer)
            if line.write(frame):
                self._stats.answered += 1

        timer = asyncio.get_running_loop().call_later(delay, send)
        self._timers.add(timer)
