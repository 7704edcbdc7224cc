"""The lighting controller: which level each lamp gets now, and making sure it gets it.

Precedence, highest first (documented in docs/operations.md):
1. forced off by a safety action (leakage on the lamp's circuit) until released;
2. an override from the platform, OPC UA or the CLI, until it expires or is replaced;
3. the lighting program (calendar + astro/fixed steps), when the clock is trusted;
4. the photocell, when the clock is not trusted;
5. the default light state (100 %).

The level is re-derived from the wall clock on every tick, never slept towards: an NTP step
or a DST change moves the next tick's answer, so no jump can leave a night dark or a state
stuck. Every level is pushed as a lease the controller holds only ``lease_s``; the agent
rewrites it every ``refresh_s``, and if the agent dies the controller goes to its
commissioned road-safe fallback by itself.

Only the program's calendar reads the wall clock. An override is a duration: it ends when
``duration_s`` has passed on the monotonic clock, so a wall clock stepped back a day cannot
make a 60 s override last a day (nor one stepped forward end it early). Its wall-clock
``expires_at`` is kept for people and for a restart, where the time left is read from it but
never more than the override's own duration. ``clock_stepped`` re-bases those stamps after a
step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog

from smartpole.agent.control.program import Decision
from smartpole.agent.core.clock import SYSTEM_CLOCK, Clock
from smartpole.agent.core.errors import AgentError
from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.state_schema import Schema, prepare
from smartpole.drivers.errors import DriverError

log = structlog.get_logger("smartpole.lighting")

OVERRIDES_FILE = "overrides.json"


def _overrides_v2(lamps: object) -> object:
    """Version 1 was the map of lamps itself, with no room for a version (and a lamp named
    "version" would have clashed with one): version 2 holds that map under "overrides"."""
    return {"overrides": lamps}


OVERRIDES_SCHEMA = Schema("overrides", 2, steps={1: _overrides_v2})


class LevelSource(Protocol):
    """What the lighting program answers (agent/control/program.py's LightingPlan)."""

    def level_at(self, lamp: str, at: datetime) -> Decision: ...


class LampActuator(Protocol):
    """How a level reaches a lamp controller; the Modbus one writes with read-back."""

    async def commission(self, lamp: str, *, fallback_level: int, lease_s: int) -> None: ...

    async def push(self, lamp: str, level: int, *, changed: bool) -> None: ...


@dataclass
class Override:
    level: int
    expires_at: float  # epoch seconds: what people see, and the time left after a restart
    actor: str
    set_at: float  # epoch seconds
    ends_mono: float = field(default=0.0, compare=False)  # when it ends (monotonic)

    def to_json(self) -> dict[str, object]:
        """What is saved and shown (the monotonic end means nothing after a restart)."""
        return {"level": self.level, "expires_at": self.expires_at, "actor": self.actor,
                "set_at": self.set_at}  # fmt: skip


@dataclass
class LampState:
    level: int | None = None  # last level pushed successfully
    reason: str = ""
    source: str = ""
    pushed_at: float | None = None  # monotonic
    commissioned: bool = False
    last_error: str | None = None


@dataclass(frozen=True)
class Target:
    level: int
    source: str  # forced_off | override | program | photocell | default
    reason: str


class LightingController:
    def __init__(
        self,
        lamps: list[str],
        program: LevelSource | None,
        actuator: LampActuator,
        *,
        state_dir: Path,
        clock: Clock | None = None,
        default_level: int = 100,
        fallback_level: int = 100,
        lease_s: int = 300,
        refresh_s: float = 60.0,
        clock_trusted: Callable[[], bool] = lambda: True,
        photocell_dark: Callable[[], bool | None] = lambda: None,
    ) -> None:
        self.lamps = list(lamps)
        self._program = program
        self._actuator = actuator
        self._clock = clock or SYSTEM_CLOCK
        self._default = default_level
        self._fallback = fallback_level
        self._lease_s = lease_s
        self._refresh_s = refresh_s
        self._clock_trusted = clock_trusted
        self._photocell_dark = photocell_dark
        self._path = state_dir / OVERRIDES_FILE
        self._file = JsonFile(self._path, "overrides")
        self._overrides: dict[str, Override] = self._load_overrides()
        self._forced_off: dict[str, str] = {}
        self.state: dict[str, LampState] = {lamp: LampState() for lamp in self.lamps}
        self._pushing = asyncio.Lock()  # a tick and an apply never push one lamp at once

    # ----- decisions -----

    def target(self, lamp: str) -> Target:
        forced = self._forced_off.get(lamp)
        if forced is not None:
            return Target(0, "forced_off", forced)
        wall = self._clock.time()
        now = datetime.fromtimestamp(wall, UTC)
        override = self._overrides.get(lamp)
        if override is not None:
            left = override.ends_mono - self._clock.monotonic()
            if left > 0:
                until = datetime.fromtimestamp(wall + left, UTC).isoformat(timespec="seconds")
                return Target(
                    override.level, "override", f"override by {override.actor} until {until}"
                )
            self._expire(lamp, override)
        if self._program is not None and self._clock_trusted():
            try:
                decision = self._program.level_at(lamp, now)
            except ValueError as exc:  # a program that cannot answer must not leave it dark
                log.error("program_failed", lamp=lamp, error=str(exc))
            else:
                return Target(decision.level, decision.source, decision.reason)
        dark = self._photocell_dark()
        if dark is not None:
            level = self._default if dark else 0
            return Target(
                level,
                "photocell",
                "clock not trusted: photocell says " + ("dark" if dark else "light"),
            )
        return Target(
            self._default, "default", "no trusted clock and no photocell: default light state"
        )

    # ----- commands -----

    def set_override(self, lamp: str, level: int, duration_s: float, actor: str) -> Override:
        """The newest override replaces any earlier one for the same lamp (documented rule)."""
        if lamp not in self.state:
            raise KeyError(lamp)
        if not 0 <= level <= 100:
            raise ValueError("an override level is 0 to 100 %")
        if not 0 < duration_s <= 7 * 86400:
            raise ValueError("an override lasts more than 0 s and at most 7 days")
        wall, mono = self._clock.time(), self._clock.monotonic()
        override = Override(level, wall + duration_s, actor, wall, mono + duration_s)
        self._overrides[lamp] = override
        self._save_overrides()
        log.info("override_set", lamp=lamp, level=level, duration_s=duration_s, actor=actor)
        return override

    def clear_override(self, lamp: str, actor: str) -> bool:
        removed = self._overrides.pop(lamp, None)
        if removed is not None:
            self._save_overrides()
            log.info("override_cleared", lamp=lamp, actor=actor)
        return removed is not None

    def force_off(self, lamp: str, reason: str) -> None:
        if lamp in self.state and lamp not in self._forced_off:
            self._forced_off[lamp] = reason
            log.warning("lamp_forced_off", lamp=lamp, reason=reason)

    def release(self, lamp: str) -> None:
        if self._forced_off.pop(lamp, None) is not None:
            log.info("lamp_released", lamp=lamp)

    def clock_stepped(self, step_s: float) -> None:
        """The wall clock jumped by ``step_s``: overrides keep their monotonic end; their
        wall-clock stamps follow the step, so status and a restart see the right times. The
        caller re-evaluates the program at once (``tick``)."""
        if not self._overrides:
            return
        wall, mono = self._clock.time(), self._clock.monotonic()
        for override in self._overrides.values():
            override.set_at += step_s
            override.expires_at = wall + (override.ends_mono - mono)
        self._save_overrides()

    # ----- the loop -----

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self._tick_s())  # short ticks: the wall clock decides, not us

    def _tick_s(self) -> float:
        return max(1.0, min(self._refresh_s / 4, 15.0))

    async def tick(self) -> None:
        """Push every lamp whose target changed or whose lease needs refreshing."""
        for lamp in self.lamps:
            async with self._pushing:
                await self._tick_lamp(lamp)

    async def apply(self, lamp: str) -> dict[str, object]:
        """Push ``lamp``'s target now rather than at the next tick (an override was just
        set) and return its state as ``status`` shows it."""
        if lamp not in self.state:
            raise KeyError(lamp)
        async with self._pushing:
            await self._tick_lamp(lamp)
        return self._status_of(lamp)

    async def _tick_lamp(self, lamp: str) -> None:
        state = self.state[lamp]
        target = self.target(lamp)
        changed = target.level != state.level
        due = state.pushed_at is None or (
            self._clock.monotonic() - state.pushed_at >= self._refresh_s
        )
        if changed or due:
            await self._push(lamp, state, target, changed=changed)

    async def _push(self, lamp: str, state: LampState, target: Target, *, changed: bool) -> None:
        try:
            if not state.commissioned:
                await self._actuator.commission(
                    lamp, fallback_level=self._fallback, lease_s=self._lease_s
                )
                state.commissioned = True
            await self._actuator.push(lamp, target.level, changed=changed)
        except (DriverError, AgentError) as exc:
            if state.last_error is None:
                log.warning("lamp_push_failed", lamp=lamp, level=target.level, error=str(exc))
            state.last_error = str(exc)
            state.commissioned = False  # the controller may have restarted: commission again
            return
        if state.last_error is not None:
            log.info("lamp_push_recovered", lamp=lamp)
        if changed:
            log.info(
                "lamp_level",
                lamp=lamp,
                level=target.level,
                source=target.source,
                reason=target.reason,
            )
        state.level, state.reason, state.source = target.level, target.reason, target.source
        state.pushed_at = self._clock.monotonic()
        state.last_error = None

    # ----- persistence and status -----

    def _expire(self, lamp: str, override: Override) -> None:
        if self._overrides.get(lamp) is override:
            del self._overrides[lamp]
            self._save_overrides()
            log.info("override_expired", lamp=lamp)

    def _load_overrides(self) -> dict[str, Override]:
        """Overrides from before a restart, with the time they have left on the wall
        clock, never more than their duration (the clock may have stepped back since)."""
        prepare(self._path, OVERRIDES_SCHEMA)
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            if raw.get("version") != OVERRIDES_SCHEMA.current:
                raise ValueError(f"unknown version {raw.get('version')!r}")
            overrides = {lamp: Override(**item) for lamp, item in raw["overrides"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("overrides_unreadable", file=str(self._path), error=str(exc))
            return {}
        wall, mono = self._clock.time(), self._clock.monotonic()
        for override in overrides.values():
            duration = override.expires_at - override.set_at
            override.ends_mono = mono + min(override.expires_at - wall, duration)
        return overrides

    def _save_overrides(self) -> None:
        overrides = {lamp: o.to_json() for lamp, o in self._overrides.items()}
        self._file.write({"version": OVERRIDES_SCHEMA.current, "overrides": overrides})

    def status(self) -> list[dict[str, object]]:
        return [self._status_of(lamp) for lamp in self.lamps]

    def _status_of(self, lamp: str) -> dict[str, object]:
        state, target = self.state[lamp], self.target(lamp)
        override = self._overrides.get(lamp)
        return {
            "lamp": lamp,
            "target": target.level,
            "source": target.source,
            "reason": target.reason,
            "pushed_level": state.level,
            "pushed_age_s": None
            if state.pushed_at is None
            else round(self._clock.monotonic() - state.pushed_at, 1),
            "override": None if override is None else override.to_json(),
            "forced_off": self._forced_off.get(lamp),
            "last_error": state.last_error,
        }
