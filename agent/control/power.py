"""Device power management: recover a hung pole device by power-cycling its relay channel.

A camera, small cell or screen on the pole is fed through one channel of the relay module
(Shenzhen DB4403/T 30-2019 asks for remote power cycling of pole devices). An operator can
cycle a device on command; a device with ``auto_after_offline_s`` is cycled by the agent
when it has been offline (or faulty: answering only garbage) that long, at most
``max_attempts`` times with a doubling wait between attempts, then the agent gives up
(logged once) until the device has stayed online for ``reset_after_online_s``.

Rules that keep power management from fighting the safety functions or leaving a device
dark:

* a relay that safety holds off is never switched on: a cycle is refused while it is held,
  and if safety takes the relay during a cycle the channel is left off for safety to give
  back; if safety took it while our "on" waited in the bus queue, it is switched off again
  at once;
* once the "off" has been sent, the channel is switched back on in a ``finally``, whatever
  happened (a failed write, a cancelled task); if that fails too, or the agent dies in
  between, a persisted "off pending" flag makes the next check switch it on again;
* the attempt count, the backoff and the give-up survive a restart (an atomically replaced
  JSON file), so a restart neither forgets the attempts nor starts them over.

Stamps (``last_cycle_at``, ``next_allowed_at``) are wall-clock epoch seconds, for people and
for a restart. Durations run on the monotonic clock, so a wall clock stepped forward by days
cannot make a device look offline long enough for an automatic cycle nor end a backoff
early, and one stepped back cannot stretch them: a device's ``state_since`` (wall clock) is
placed on the monotonic clock when it is first seen, and a backoff read back after a
restart lasts at most the backoff that set it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import structlog
from pydantic import TypeAdapter, ValidationError

from smartpole.agent.config.alarms import AlarmRule
from smartpole.agent.config.power import PowerRule
from smartpole.agent.core.audit import AuditLog, AuditRecord
from smartpole.agent.core.clock import SYSTEM_CLOCK, Clock
from smartpole.agent.core.errors import AgentError
from smartpole.agent.core.jsonfile import JsonFile
from smartpole.agent.core.state_schema import Schema, prepare
from smartpole.drivers.errors import DriverError

log = structlog.get_logger("smartpole.power")

ACTOR = "agent:power"
STORE_FILE = "power.json"
STORE_VERSION = 1
SCHEMA = Schema("power", STORE_VERSION)
CHECK_PERIOD_S = 5.0
WRITE_TIMEOUT_S = 30.0  # a relay write that takes longer is treated as failed
SHUTDOWN_WRITE_TIMEOUT_S = 3.0  # switching back on while the daemon is being stopped
RESTORE_RETRY_S = 30.0  # first retry of a failed "switch back on", doubling ...
RESTORE_RETRY_MAX_S = 600.0  # ... up to this

ONLINE = "online"
OFFLINE = "offline"
#: answering garbage (a hung device's firmware babbling): power-cycled like an offline one
FAULTY = "faulty"

Writer = Callable[[str, str, object, str], Awaitable[object]]


class PowerRefusedError(AgentError):
    """A power cycle that was not started; the message says why."""


@dataclass
class PowerState:
    """What is remembered across restarts for one device."""

    attempts: int = 0  # automatic cycles since the last reset
    last_cycle_at: float | None = None
    last_cycle_by: str | None = None
    last_result: str | None = None  # "ok" or what went wrong
    next_allowed_at: float | None = None  # no automatic cycle before this
    gave_up: bool = False
    awaiting_recovery: bool = False  # an automatic cycle happened; log the recovery once
    off_pending: bool = False  # the "off" may have reached the relay; "on" not confirmed


@dataclass
class _Step:
    step: str
    value: bool
    ok: bool = False
    read_back: object = None
    error: str | None = None
    at: float = 0.0
    actor: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Cycle:
    device: str
    relay: str
    actor: str
    off_s: float
    started_at: float
    steps: list[_Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    finished_at: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "device": self.device,
            "relay": self.relay,
            "actor": self.actor,
            "ok": not self.errors,
            "error": "; ".join(self.errors) or None,
            "off_s": self.off_s,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "steps": [step.to_json() for step in self.steps],
        }


class PowerManager:
    def __init__(
        self,
        rules: Mapping[str, PowerRule],
        write: Writer,
        device_state: Callable[[str], tuple[str, float]],
        held_off: Callable[[], set[str]],
        audit: AuditLog,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        store_path: Path,
        check_period_s: float = CHECK_PERIOD_S,
    ) -> None:
        self._rules = dict(rules)
        self._write = write
        self._device_state = device_state
        self._held_off = held_off
        self._audit = audit
        self._clock = clock
        self._sleep = sleep
        self._path = store_path
        self._check_period_s = check_period_s
        self._state: dict[str, PowerState] = {device: PowerState() for device in self._rules}
        self._state.update(self._load())
        self._running: set[str] = set()
        # Monotonic: device -> (when, next delay); device -> no automatic cycle before;
        # device -> (its state_since as reported, the same instant on the monotonic clock).
        self._restore_at: dict[str, tuple[float, float]] = {}
        self._next_allowed: dict[str, float] = {}
        self._since: dict[str, tuple[float, float]] = {}
        self._held_logged: set[str] = set()
        self._file = JsonFile(store_path, "power_store")

    # ----- commands -----

    async def power_cycle(self, device: str, actor: str) -> dict[str, object]:
        """Switch the device's relay off, wait ``off_s``, switch it on; returns what was done.

        Raises ``PowerRefusedError`` (audited) without touching the relay when the device has
        no rule, a cycle of it (or of another device on the same relay) is running, or
        safety holds the relay off. A failed write does not raise: the answer says so.
        """
        rule = self._rules.get(device)
        if rule is None:
            known = ", ".join(sorted(self._rules)) or "none"
            self._refuse(device, actor, f"no power rule for device {device!r} (rules: {known})")
        reason = self._refusal(device, rule)
        if reason is not None:
            self._refuse(device, actor, reason)
        return await self._cycle(device, rule, actor)

    def _refusal(self, device: str, rule: PowerRule) -> str | None:
        if device in self._running:
            return f"a power cycle of {device} is already running"
        for other in self._running:
            if self._rules[other].relay == rule.relay:
                return f"{rule.relay} is being switched for {other}; try again when it is done"
        if self._is_held(rule):
            return (
                f"{rule.relay} is held off by safety (an active alarm cut it); power "
                "management never switches it on: reset the alarm first"
            )
        return None

    def _refuse(self, device: str, actor: str, reason: str) -> NoReturn:
        self._audit.record(AuditRecord(actor, "power_cycle", device, "cycle", error=reason))
        log.warning("power_cycle_refused", device=device, actor=actor, reason=reason)
        raise PowerRefusedError(reason)

    # ----- one cycle -----

    async def _cycle(self, device: str, rule: PowerRule, actor: str) -> dict[str, object]:
        state = self._state[device]
        cycle = _Cycle(device, rule.relay, actor, rule.off_s, self._clock.time())
        self._running.add(device)
        try:
            state.last_cycle_at, state.last_cycle_by = cycle.started_at, actor
            state.off_pending = True  # before the write: a lost reply may still have switched
            self._save()
            log.warning("power_cycle_started", device=device, relay=rule.relay, actor=actor)
            try:
                off = await self._switch(device, rule, False, actor, "power_off", cycle)
                if off.ok:
                    try:
                        await self._sleep(rule.off_s)
                    except asyncio.CancelledError:
                        cycle.errors.append("interrupted during the off time (agent stopping)")
                        raise
                else:
                    cycle.errors.append(f"switching {rule.relay} off failed: {off.error}")
            finally:
                # Whatever happened (a failed or unconfirmed "off", a cancelled wait), the
                # device must not be left without power by us.
                await self._switch_back_on(device, rule, actor, "power_on", cycle)
        finally:
            self._running.discard(device)
            self._finish(device, rule, cycle)
        return cycle.to_json()

    def _finish(self, device: str, rule: PowerRule, cycle: _Cycle) -> None:
        state = self._state[device]
        cycle.finished_at = self._clock.time()
        state.last_result = "; ".join(cycle.errors) or "ok"
        backoff = rule.backoff_after(state.attempts)
        state.next_allowed_at = max(state.next_allowed_at or 0.0, cycle.finished_at + backoff)
        not_before = self._clock.monotonic() + backoff
        self._next_allowed[device] = max(self._next_allowed.get(device, not_before), not_before)
        self._save()
        event = "power_cycle_done" if not cycle.errors else "power_cycle_failed"
        (log.info if not cycle.errors else log.error)(
            event, device=device, relay=rule.relay, actor=cycle.actor, result=state.last_result
        )

    async def _switch_back_on(
        self, device: str, rule: PowerRule, actor: str, action: str, cycle: _Cycle
    ) -> bool:
        """Switch the relay on unless safety holds it; True when it is on (or safety's)."""
        state = self._state[device]
        if self._is_held(rule):
            # Safety cut the relay meanwhile: it is safety's now, and safety switches it on
            # when its alarm clears. Never switch on a point safety holds off.
            note = f"{rule.relay} held off by safety: left off for safety to give back"
            cycle.steps.append(_Step(action, True, error=note, at=self._clock.time(), actor=actor))
            target = self._target(device, rule)
            self._audit.record(AuditRecord(actor, action, target, True, error=note))
            cycle.errors.append(note)
            state.off_pending = False
            self._restore_at.pop(device, None)
            self._save()
            return True
        on = await self._switch(device, rule, True, actor, action, cycle)
        if not on.ok:
            cycle.errors.append(f"switching {rule.relay} back on failed: {on.error}")
            self._schedule_restore(device)
            return False
        state.off_pending = False
        self._restore_at.pop(device, None)
        self._save()
        if self._is_held(rule):
            # Safety raised while our "on" waited in the bus queue (its "off" goes first):
            # give it its cut back at once.
            note = f"safety took {rule.relay} while it was being switched on: switched off again"
            log.error("power_on_raced_safety", device=device, relay=rule.relay)
            await self._switch(device, rule, False, ACTOR, "power_off", cycle)
            cycle.errors.append(note)
        return True

    async def _switch(
        self, device: str, rule: PowerRule, on: bool, actor: str, action: str, cycle: _Cycle
    ) -> _Step:
        step = _Step(action, on, at=self._clock.time(), actor=actor)
        cycle.steps.append(step)
        task = asyncio.current_task()
        stopping = task is not None and task.cancelling() > 0
        limit_s = SHUTDOWN_WRITE_TIMEOUT_S if stopping else WRITE_TIMEOUT_S
        try:
            async with asyncio.timeout(limit_s):
                step.read_back = await self._write(rule.relay_device, rule.relay_point, on, actor)
        except TimeoutError:
            step.error = f"no answer within {limit_s:g} s"
        except (DriverError, AgentError) as exc:
            step.error = str(exc) or type(exc).__name__
        except asyncio.CancelledError:
            step.error = "interrupted (agent stopping): outcome unknown"
            raise
        else:
            step.ok = step.read_back is None or step.read_back == on
            if not step.ok:
                step.error = f"read back {step.read_back!r}, wrote {on!r}"
        finally:
            target = self._target(device, rule)
            self._audit.record(
                AuditRecord(actor, action, target, on, step.ok, step.read_back, step.error)
            )
        return step

    @staticmethod
    def _target(device: str, rule: PowerRule) -> str:
        return f"{device}@{rule.relay}"

    def _is_held(self, rule: PowerRule) -> bool:
        return rule.relay in self._held_off()

    # ----- the loop -----

    async def run(self) -> None:
        """Check every device every few seconds; cycles run concurrently per relay."""
        while True:
            await self.tick()
            await self._sleep(self._check_period_s)

    async def tick(self) -> None:
        """One check of every rule: restore pending power, log recoveries, cycle if due."""
        now = self._clock.monotonic()
        restores: list[str] = []
        cycles: list[str] = []
        claimed = {self._rules[d].relay for d in self._running}
        for device, rule in self._rules.items():
            if device in self._running or rule.relay in claimed:
                continue
            state = self._state[device]
            if state.off_pending:
                when, _ = self._restore_at.get(device, (0.0, RESTORE_RETRY_S))
                if now >= when:
                    restores.append(device)
                    claimed.add(rule.relay)
                continue
            status, since = self._device_state(device)
            lasted = self._lasted(device, since)
            if status == ONLINE:
                self._seen_online(device, rule, state, lasted)
            elif status in (OFFLINE, FAULTY) and self._due(device, rule, state, now, lasted):
                cycles.append(device)
                claimed.add(rule.relay)
        if not (restores or cycles):
            return
        async with asyncio.TaskGroup() as group:
            for device in restores:
                group.create_task(self._restore(device), name=f"power-restore:{device}")
            for device in cycles:
                group.create_task(self._auto_cycle(device), name=f"power-cycle:{device}")

    def _lasted(self, device: str, since: float) -> float:
        """How long the device has been in its state, on the monotonic clock: its wall-clock
        ``since`` is placed there by the clocks' offset when this ``since`` is first seen."""
        seen = self._since.get(device)
        if seen is None or seen[0] != since:
            wall, mono = self._clock.time(), self._clock.monotonic()
            seen = self._since[device] = (since, mono - max(0.0, wall - since))
        return self._clock.monotonic() - seen[1]

    def _not_before(self, device: str, rule: PowerRule, state: PowerState) -> float | None:
        """No automatic cycle before this (monotonic); after a restart, from the saved wall
        time, but never further off than the backoff that set it."""
        if state.next_allowed_at is None:
            return None
        if device not in self._next_allowed:
            left = state.next_allowed_at - self._clock.time()
            left = min(max(left, 0.0), rule.backoff_after(state.attempts))
            self._next_allowed[device] = self._clock.monotonic() + left
        return self._next_allowed[device]

    def _seen_online(self, device: str, rule: PowerRule, state: PowerState, lasted: float) -> None:
        self._held_logged.discard(device)
        if state.awaiting_recovery:
            state.awaiting_recovery = False
            self._save()
            log.info("power_cycle_recovered", device=device, attempts=state.attempts)
        if (state.attempts or state.gave_up) and lasted >= rule.reset_after_online_s:
            log.info(
                "power_cycle_attempts_reset",
                device=device,
                attempts=state.attempts,
                gave_up=state.gave_up,
                online_s=round(lasted),
            )
            state.attempts, state.gave_up, state.next_allowed_at = 0, False, None
            self._next_allowed.pop(device, None)
            self._save()

    def _due(
        self, device: str, rule: PowerRule, state: PowerState, now: float, lasted: float
    ) -> bool:
        """``now`` is monotonic; ``lasted`` how long the device has been offline."""
        if rule.auto_after_offline_s is None or state.gave_up:
            return False
        if lasted < rule.auto_after_offline_s:
            return False
        not_before = self._not_before(device, rule, state)
        if not_before is not None and now < not_before:
            return False
        if self._is_held(rule):
            if device not in self._held_logged:  # safety cut its power: it is meant to be off
                self._held_logged.add(device)
                log.info("power_cycle_held_off", device=device, relay=rule.relay)
            return False
        self._held_logged.discard(device)
        if self._device_state(rule.relay_device)[0] == OFFLINE:
            return False  # the relay module cannot be reached: an attempt would be wasted
        if state.attempts >= rule.max_attempts:
            state.gave_up = True
            self._save()
            log.error(
                "power_cycle_gave_up",
                device=device,
                relay=rule.relay,
                attempts=state.attempts,
                offline_s=round(lasted),
            )
            return False
        return True

    async def _auto_cycle(self, device: str) -> None:
        rule, state = self._rules[device], self._state[device]
        if self._refusal(device, rule) is not None:  # changed since the check (a command)
            return
        state.attempts += 1
        state.awaiting_recovery = True
        log.warning(
            "power_cycle_automatic",
            device=device,
            attempt=state.attempts,
            max_attempts=rule.max_attempts,
        )
        await self._cycle(device, rule, ACTOR)

    async def _restore(self, device: str) -> None:
        """Switch on a relay left off by a failed cycle or a restart in the middle of one."""
        rule = self._rules[device]
        if any(self._rules[other].relay == rule.relay for other in self._running):
            return  # a command got there first; its own "on" settles it
        cycle = _Cycle(device, rule.relay, ACTOR, 0.0, self._clock.time())
        self._running.add(device)
        try:
            ok = await self._switch_back_on(device, rule, ACTOR, "power_restore", cycle)
        finally:
            self._running.discard(device)
        if not ok:
            error = "; ".join(cycle.errors)
            log.error("power_restore_failed", device=device, relay=rule.relay, error=error)
        elif cycle.errors:
            log.warning("power_restore_left_to_safety", device=device, relay=rule.relay)
        else:
            log.info("power_restored", device=device, relay=rule.relay)

    def _schedule_restore(self, device: str) -> None:
        _, delay = self._restore_at.get(device, (0.0, RESTORE_RETRY_S))
        self._restore_at[device] = (
            self._clock.monotonic() + delay,
            min(delay * 2, RESTORE_RETRY_MAX_S),
        )

    # ----- status and persistence -----

    def status(self) -> list[dict[str, object]]:
        held = self._held_off()
        out: list[dict[str, object]] = []
        for device, rule in self._rules.items():
            state = self._state[device]
            device_state, since = self._device_state(device)
            out.append(
                {
                    "device": device,
                    "relay": rule.relay,
                    "automatic": rule.auto_after_offline_s is not None,
                    "device_state": device_state,
                    "state_for_s": round(self._lasted(device, since), 1),
                    "attempts": state.attempts,
                    "max_attempts": rule.max_attempts,
                    "last_cycle_at": state.last_cycle_at,
                    "last_cycle_by": state.last_cycle_by,
                    "last_result": state.last_result,
                    "next_allowed_at": state.next_allowed_at,
                    "gave_up": state.gave_up,
                    "running": device in self._running,
                    "held_off_by_safety": rule.relay in held,
                    "power_off_pending": state.off_pending,
                }
            )
        return out

    def _load(self) -> dict[str, PowerState]:
        prepare(self._path, SCHEMA)
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("power_store_unreadable", file=str(self._path), error=str(exc))
            return {}
        known = {f.name for f in fields(PowerState)}
        adapter = TypeAdapter(PowerState)
        devices = raw.get("devices") if isinstance(raw, dict) else None
        if not isinstance(devices, dict):
            log.warning("power_store_unreadable", file=str(self._path), error="no devices")
            return {}
        out: dict[str, PowerState] = {}
        for device, item in devices.items():
            if device not in self._rules:
                continue  # its rule was removed from the config
            try:
                state = adapter.validate_python({k: v for k, v in item.items() if k in known})
            except (AttributeError, ValidationError) as exc:
                log.warning("power_store_entry_skipped", device=device, error=str(exc))
                continue
            out[device] = state
        return out

    @property
    def write_failures(self) -> int:
        return self._file.write_failures

    def _save(self) -> None:
        """Replace the store file atomically: a crash leaves the old file or the new one."""
        data = {
            "version": STORE_VERSION,
            "devices": {device: asdict(state) for device, state in self._state.items()},
        }
        self._file.write(data, indent=1)


def held_off_points(
    safety_held: Iterable[str], active_kinds: Iterable[str], alarm_rules: Mapping[str, AlarmRule]
) -> set[str]:
    """Every relay safety holds off: what it cut since the start, plus what the active
    alarms' rules cut (an alarm restored from alarms.json after a restart holds its cuts
    although the supervisor did not switch them in this run)."""
    points = set(safety_held)
    for kind in active_kinds:
        rule = alarm_rules.get(kind)
        if rule is not None:
            points.update(rule.on_raise.cut)
    return points
