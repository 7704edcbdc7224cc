"""Alarm lifecycle: raise, clear and acknowledge, with debounce, hysteresis and latching.

The pole's safety functions (door, tilt, water, leakage, cabinet over-temperature, lamp
faults, in the spirit of TALQ's alarm functions) are each an ``AlarmDefinition``. Readings
come in through ``AlarmManager.observe``; every transition (raised, cleared, acknowledged)
happens once per activation, is appended to the outbox stream ``alarms`` first, then
persisted, logged once and returned so the caller can act on it (cut a relay on leakage).

Rules that keep a faulty sensor from causing a safety action on its own:

* only readings of quality ``good`` can raise or clear an alarm; ``uncertain``, ``bad`` and
  ``stale`` readings (and values that do not fit the definition, such as NaN) change nothing
  and restart any debounce in progress, because the condition could not be confirmed;
* a definition with ``stale_after_s`` watches its sources: one that has given no good reading
  for that long raises a separate ``<kind>_sensor_lost`` alarm (a leakage sensor that went
  quiet is itself an alarm), which clears with the next good reading.

Debounce is evaluated on readings (the point table delivers one per poll): a condition must
be seen continuously for ``debounce_s`` before the alarm is raised, and seen gone for as long
before it clears. Times are wall-clock seconds (``time.time``), the same base as the ``at`` of
readings, because raise times persist across reboots; a clock stepping backwards restarts a
debounce instead of stretching it.

Active alarms are kept in a JSON file written atomically (as ``agent/state.py`` does), so a
restart neither forgets an alarm nor raises it a second time. A write that fails is logged
once and retried at the next transition or ``tick``; it never stops the daemon.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.errors import AgentError
from smartpole.agent.outbox import Outbox, OutboxError, Priority

log = structlog.get_logger("smartpole.alarms")

STREAM = "alarms"
FORMAT_VERSION = 1
SENSOR_LOST_SUFFIX = "_sensor_lost"
GOOD = "good"

Severity = Literal["critical", "major", "minor", "warning"]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,79}$")]
Reading = float | bool | None


class AlarmError(AgentError):
    """Alarm definitions that cannot work together, or an alarm that does not exist."""


class Condition(StrEnum):
    PRESENT = "present"  # on the alarm side of the raise threshold, or the input says so
    ABSENT = "absent"  # on the safe side of the clear threshold
    BETWEEN = "between"  # in the hysteresis band: neither raises nor clears


class AlarmDefinition(BaseModel):
    """One alarm function, applied to every source that reports this ``kind``.

    Analog: raised when the value is above ``raise_above`` (or below ``raise_below``),
    cleared when it is below ``clear_below`` (above ``clear_above``); a clear threshold left
    out equals its raise threshold (no hysteresis). Both sides together make a band alarm
    (e.g. supply voltage). Digital: raised while the input equals ``raise_when``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    kind: Kind
    severity: Severity
    raise_above: float | None = None
    clear_below: float | None = None
    raise_below: float | None = None
    clear_above: float | None = None
    raise_when: bool | None = None
    debounce_s: float = Field(0.0, ge=0, le=86_400)
    latching: bool = Field(
        False, description="stays raised until acknowledged AND the condition is gone"
    )
    stale_after_s: float | None = Field(None, gt=0, le=7 * 86_400)
    sensor_lost_severity: Severity = "major"
    description: str = ""

    @model_validator(mode="after")
    def _thresholds(self) -> Self:
        analog = self.raise_above is not None or self.raise_below is not None
        if self.raise_when is not None and analog:
            raise ValueError("raise_when (digital) cannot be combined with raise_above/below")
        if self.raise_when is None and not analog:
            raise ValueError("give raise_above and/or raise_below (analog) or raise_when")
        if self.clear_below is not None:
            if self.raise_above is None:
                raise ValueError(
                    "clear_below goes with raise_above (for raise_below use clear_above)"
                )
            if self.clear_below > self.raise_above:
                raise ValueError(
                    f"clear_below ({self.clear_below}) must not be above raise_above "
                    f"({self.raise_above}): the clear threshold is on the safe side"
                )
        if self.clear_above is not None:
            if self.raise_below is None:
                raise ValueError(
                    "clear_above goes with raise_below (for raise_above use clear_below)"
                )
            if self.clear_above < self.raise_below:
                raise ValueError(
                    f"clear_above ({self.clear_above}) must not be below raise_below "
                    f"({self.raise_below}): the clear threshold is on the safe side"
                )
        if self.raise_above is not None and self.raise_below is not None:
            low, high = self.clear_level_low, self.clear_level_high
            crossed = low is not None and high is not None and low > high
            if self.raise_below >= self.raise_above or crossed:
                raise ValueError("raise_below/clear_above must lie below raise_above/clear_below")
        return self

    @property
    def digital(self) -> bool:
        return self.raise_when is not None

    @property
    def clear_level_high(self) -> float | None:
        """Below this the high side is safe again (None: no high side)."""
        return self.raise_above if self.clear_below is None else self.clear_below

    @property
    def clear_level_low(self) -> float | None:
        """Above this the low side is safe again (None: no low side)."""
        return self.raise_below if self.clear_above is None else self.clear_above

    def evaluate(self, value: Reading) -> Condition | None:
        """Where a reading stands; None when it does not fit (wrong type, NaN, missing)."""
        if self.raise_when is not None:
            if isinstance(value, bool):
                state = value
            elif isinstance(value, int | float) and value in (0, 1):
                state = bool(value)  # a digital input read as a register or coil
            else:
                return None
            return Condition.PRESENT if state == self.raise_when else Condition.ABSENT
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        if not math.isfinite(number):
            return None
        if (self.raise_above is not None and number > self.raise_above) or (
            self.raise_below is not None and number < self.raise_below
        ):
            return Condition.PRESENT
        high, low = self.clear_level_high, self.clear_level_low
        if (high is None or number < high) and (low is None or number > low):
            return Condition.ABSENT
        return Condition.BETWEEN


class EventType(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True)
class AlarmEvent:
    type: EventType
    alarm_id: str  # "<source>/<kind>"
    source: str
    kind: str
    severity: str
    at: float
    value: Reading = None  # the reading that caused it (None for acknowledgements)
    actor: str | None = None  # who acknowledged
    reason: str | None = None
    outbox_seq: int | None = None  # None when the outbox was not available

    def to_json(self) -> dict[str, object]:
        return {
            "type": self.type.value,
            "alarm_id": self.alarm_id,
            "source": self.source,
            "kind": self.kind,
            "severity": self.severity,
            "at": self.at,
            "value": self.value,
            "actor": self.actor,
            "reason": self.reason,
            "outbox_seq": self.outbox_seq,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AlarmEvent:
        value = data.get("value")
        actor, reason, seq = data.get("actor"), data.get("reason"), data.get("outbox_seq")
        return cls(
            type=EventType(str(data["type"])),
            alarm_id=str(data["alarm_id"]),
            source=str(data["source"]),
            kind=str(data["kind"]),
            severity=str(data["severity"]),
            at=_float(data["at"]),
            value=value if isinstance(value, bool | int | float) else None,
            actor=None if actor is None else str(actor),
            reason=None if reason is None else str(reason),
            outbox_seq=seq if isinstance(seq, int) else None,
        )


@dataclass(frozen=True)
class Alarm:
    """A snapshot of one active alarm."""

    alarm_id: str
    source: str
    kind: str
    severity: str
    latching: bool
    raised_at: float
    value: Reading
    condition_present: bool  # False: the condition is gone, a latch holds the alarm
    acknowledged_at: float | None
    acknowledged_by: str | None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    def to_json(self) -> dict[str, object]:
        return {
            "alarm_id": self.alarm_id,
            "source": self.source,
            "kind": self.kind,
            "severity": self.severity,
            "latching": self.latching,
            "raised_at": self.raised_at,
            "value": self.value,
            "condition_present": self.condition_present,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
        }


class _Track:
    """The state of one (source, kind) pair, active or not."""

    def __init__(self, source: str, kind: str, definition: AlarmDefinition | None) -> None:
        self.source = source
        self.kind = kind
        self.definition = definition  # None: restored, but its definition is gone
        self.severity: str = definition.severity if definition is not None else "major"
        self.active = False
        self.raised_at = 0.0
        self.value: Reading = None
        self.condition = False
        self.acknowledged_at: float | None = None
        self.acknowledged_by: str | None = None
        self.pending_since: float | None = None  # debounce toward the other state

    @property
    def alarm_id(self) -> str:
        return f"{self.source}/{self.kind}"

    def snapshot(self) -> Alarm:
        return Alarm(
            alarm_id=self.alarm_id,
            source=self.source,
            kind=self.kind,
            severity=self.severity,
            latching=self.definition is not None and self.definition.latching,
            raised_at=self.raised_at,
            value=self.value,
            condition_present=self.condition,
            acknowledged_at=self.acknowledged_at,
            acknowledged_by=self.acknowledged_by,
        )


class AlarmManager:
    """Owns every alarm of the pole; called from the control process' event loop.

    ``observe`` feeds readings, ``tick`` (call it every second or so) notices sensors that
    went quiet, ``acknowledge`` is the operator's. Each returns the transitions it caused.
    """

    def __init__(
        self,
        definitions: Iterable[AlarmDefinition],
        store_path: Path,
        outbox: Outbox | None,
        clock: Callable[[], float] = time.time,
        *,
        history_size: int = 200,
    ) -> None:
        self.store_path = store_path
        self._outbox = outbox
        self._clock = clock
        self._definitions: dict[str, AlarmDefinition] = {}
        self._lost: dict[str, AlarmDefinition] = {}  # "<kind>_sensor_lost" -> its definition
        for definition in definitions:
            if definition.kind in self._definitions:
                raise AlarmError(f"alarm kind {definition.kind} is defined twice")
            self._definitions[definition.kind] = definition
        for definition in self._definitions.values():
            if definition.stale_after_s is None:
                continue
            lost_kind = definition.kind + SENSOR_LOST_SUFFIX
            if lost_kind in self._definitions:
                raise AlarmError(f"{lost_kind} is generated by {definition.kind}'s stale_after_s")
            self._lost[lost_kind] = AlarmDefinition(
                kind=lost_kind,
                severity=definition.sensor_lost_severity,
                raise_when=True,
                description=f"no good {definition.kind} reading for {definition.stale_after_s} s",
            )
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._last_good: dict[tuple[str, str], float] = {}  # watched (source, kind) pairs
        self._history: deque[AlarmEvent] = deque(maxlen=history_size)
        self._complained: set[tuple[str, str]] = set()
        self._dirty = False
        self._store_failing = False
        self.store_write_failures = 0
        self.outbox_failures = 0
        self._load()

    # -- feeding -------------------------------------------------------------------------

    def watch(self, source: str, kind: str) -> None:
        """Expect readings of ``kind`` from ``source`` (from the config, before the first).

        Only matters for definitions with ``stale_after_s``: the sensor-lost timer of a source
        starts when it is first watched or observed, and again at every start of the daemon.
        """
        definition = self._definitions.get(kind)
        if definition is None:
            raise AlarmError(f"no alarm definition for kind {kind}")
        if definition.stale_after_s is not None and (source, kind) not in self._last_good:
            self._last_good[(source, kind)] = self._clock()
            self._dirty = True
            self._save()

    def observe(
        self, source: str, kind: str, value: Reading, quality: str, at: float
    ) -> list[AlarmEvent]:
        """Feed one reading; return the transitions it caused, in order."""
        definition = self._definitions.get(kind)
        if definition is None:
            self._complain(source, kind, "alarm_kind_unknown", "no alarm definition")
            return []
        key = (source, kind)
        if definition.stale_after_s is not None and key not in self._last_good:
            self._last_good[key] = at
            self._dirty = True
        track = self._track(source, kind, definition)
        condition = definition.evaluate(value) if quality == GOOD else None
        if quality == GOOD and condition is None:
            self._complain(source, kind, "alarm_reading_invalid", f"value {value!r} does not fit")
        events: list[AlarmEvent] = []
        if condition is None:
            track.pending_since = None  # the condition could not be confirmed: start over
            events += self._check_stale(key, definition, at)
        else:
            self._complained.discard(key)
            if definition.stale_after_s is not None:
                self._last_good[key] = at
                lost = self._tracks.get((source, kind + SENSOR_LOST_SUFFIX))
                if lost is not None and lost.active:
                    events.append(self._clear(lost, at, value, "good reading again"))
            events += self._step(track, definition, condition, value, at)
        # A failing store is retried by tick() and transitions, not by every reading.
        if events or (self._dirty and not self._store_failing):
            self._commit(events)
        return events

    def tick(self) -> list[AlarmEvent]:
        """Raise ``<kind>_sensor_lost`` for watched sources that went quiet; retry the store."""
        now = self._clock()
        events: list[AlarmEvent] = []
        for key in list(self._last_good):
            definition = self._definitions.get(key[1])
            if definition is not None:
                events += self._check_stale(key, definition, now)
        if events or self._dirty:
            self._commit(events)
        return events

    def acknowledge(self, alarm_id: str, actor: str) -> list[AlarmEvent]:
        """Acknowledge an active alarm; a latched one whose condition is gone clears too.

        Acknowledging twice is harmless (no second event); an alarm that is not active is an
        ``AlarmError``.
        """
        track = next((t for t in self._tracks.values() if t.alarm_id == alarm_id), None)
        if track is None or not track.active:
            raise AlarmError(f"no active alarm {alarm_id}")
        if track.acknowledged_at is not None:
            return []
        now = self._clock()
        events = [self._emit(track, EventType.ACKNOWLEDGED, now, None, actor=actor)]
        track.acknowledged_at = now
        track.acknowledged_by = actor
        if not track.condition:
            events.append(self._clear(track, now, None, "acknowledged, condition gone"))
        self._commit(events)
        return events

    # -- reading -------------------------------------------------------------------------

    def active(self) -> list[Alarm]:
        tracks = sorted(
            (t for t in self._tracks.values() if t.active), key=lambda t: (t.raised_at, t.alarm_id)
        )
        return [t.snapshot() for t in tracks]

    def history(self, limit: int = 50) -> list[AlarmEvent]:
        """The last ``limit`` transitions, oldest first (kept across restarts)."""
        if limit <= 0:
            return []
        return list(self._history)[-limit:]

    # -- the state machine ---------------------------------------------------------------

    def _track(self, source: str, kind: str, definition: AlarmDefinition) -> _Track:
        track = self._tracks.get((source, kind))
        if track is None:
            track = self._tracks[(source, kind)] = _Track(source, kind, definition)
        return track

    def _step(
        self,
        track: _Track,
        definition: AlarmDefinition,
        condition: Condition,
        value: Reading,
        at: float,
    ) -> list[AlarmEvent]:
        if not track.active:
            if condition is not Condition.PRESENT:
                track.pending_since = None
                return []
            if self._debounced(track, definition, at):
                return [self._raise(track, at, value, None)]
            return []
        if condition is Condition.PRESENT:
            track.pending_since = None
            if not track.condition:
                track.condition = True  # back while latched: a later clear is debounced again
                self._dirty = True
            return []
        if condition is Condition.BETWEEN or not track.condition:
            track.pending_since = None
            return []
        if not self._debounced(track, definition, at):
            return []
        track.pending_since = None
        if definition.latching and track.acknowledged_at is None:
            track.condition = False
            self._dirty = True
            log.info("alarm_latched", alarm=track.alarm_id, value=value, at=at)
            return []
        return [self._clear(track, at, value, "condition gone")]

    @staticmethod
    def _debounced(track: _Track, definition: AlarmDefinition, at: float) -> bool:
        """True once the condition seen now has held for ``debounce_s``."""
        if track.pending_since is None or at < track.pending_since:
            track.pending_since = at
        return at - track.pending_since >= definition.debounce_s

    def _check_stale(
        self, key: tuple[str, str], definition: AlarmDefinition, now: float
    ) -> list[AlarmEvent]:
        last_good = self._last_good.get(key)
        if definition.stale_after_s is None or last_good is None:
            return []
        if now - last_good < definition.stale_after_s:
            return []
        lost_kind = key[1] + SENSOR_LOST_SUFFIX
        track = self._track(key[0], lost_kind, self._lost[lost_kind])
        if track.active:
            return []
        reason = f"no good reading for {now - last_good:.0f} s"
        return [self._raise(track, now, None, reason)]

    def _raise(self, track: _Track, at: float, value: Reading, reason: str | None) -> AlarmEvent:
        if track.definition is not None:
            track.severity = track.definition.severity
        event = self._emit(track, EventType.RAISED, at, value, reason=reason)
        track.active = True
        track.raised_at = at
        track.value = value
        track.condition = True
        track.acknowledged_at = None
        track.acknowledged_by = None
        track.pending_since = None
        return event

    def _clear(self, track: _Track, at: float, value: Reading, reason: str) -> AlarmEvent:
        event = self._emit(track, EventType.CLEARED, at, value, reason=reason)
        track.active = False
        track.condition = False
        track.acknowledged_at = None
        track.acknowledged_by = None
        track.pending_since = None
        return event

    def _emit(
        self,
        track: _Track,
        kind: EventType,
        at: float,
        value: Reading,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AlarmEvent:
        """Outbox first, then memory and the log; the store is written by ``_commit``."""
        event = AlarmEvent(
            type=kind,
            alarm_id=track.alarm_id,
            source=track.source,
            kind=track.kind,
            severity=track.severity,
            at=at,
            value=value,
            actor=actor,
            reason=reason,
        )
        if self._outbox is not None:
            payload = event.to_json()
            del payload["outbox_seq"]
            try:
                seq = self._outbox.append(STREAM, payload, priority=Priority.HIGH)
            except OutboxError:
                self.outbox_failures += 1  # the outbox logs the failure itself, once
            else:
                event = replace(event, outbox_seq=seq)
        self._history.append(event)
        self._dirty = True
        fields = {k: v for k, v in event.to_json().items() if v is not None and k != "type"}
        if kind is EventType.RAISED:
            log.warning("alarm_raised", **fields)
        elif kind is EventType.CLEARED:
            log.info("alarm_cleared", **fields)
        else:
            log.info("alarm_acknowledged", **fields)
        return event

    def _commit(self, events: list[AlarmEvent]) -> None:
        """Make transitions survive a power cut: the outbox records, then the store."""
        if events and self._outbox is not None:
            try:
                self._outbox.flush()
            except OutboxError as exc:
                self.outbox_failures += 1
                log.error("alarm_outbox_sync_failed", error=str(exc))
        self._save()

    def _complain(self, source: str, kind: str, event: str, detail: str) -> None:
        if (source, kind) not in self._complained:
            self._complained.add((source, kind))
            log.warning(event, source=source, kind=kind, detail=detail)

    # -- persistence ---------------------------------------------------------------------

    def _load(self) -> None:
        try:
            saved = json.loads(self.store_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("alarm_store_unreadable", file=str(self.store_path), error=str(exc))
            return
        if not isinstance(saved, dict) or saved.get("version") != FORMAT_VERSION:
            log.warning("alarm_store_ignored", file=str(self.store_path), reason="unknown format")
            return
        now = self._clock()
        for item in _list(saved.get("active")):
            try:
                self._restore(item)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("alarm_store_entry_skipped", entry=str(item)[:200], error=str(exc))
        for pair in _list(saved.get("watched")):
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
                definition = self._definitions.get(pair[1])
                if definition is not None and definition.stale_after_s is not None:
                    self._last_good[(pair[0], pair[1])] = now  # a fresh grace period per start
        for item in _list(saved.get("history")):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self._history.append(AlarmEvent.from_json(item))

    def _restore(self, item: dict[str, object]) -> None:
        source, kind = str(item["source"]), str(item["kind"])
        definition = self._definitions.get(kind) or self._lost.get(kind)
        track = self._tracks[(source, kind)] = _Track(source, kind, definition)
        track.active = True
        track.severity = str(item["severity"])
        track.raised_at = _float(item["raised_at"])
        value = item.get("value")
        track.value = value if isinstance(value, bool | int | float) else None
        # Without a definition nothing can clear it from readings; acknowledging does.
        track.condition = bool(item.get("condition_present", True)) and definition is not None
        acked_at, acked_by = item.get("acknowledged_at"), item.get("acknowledged_by")
        track.acknowledged_at = None if acked_at is None else _float(acked_at)
        track.acknowledged_by = None if acked_by is None else str(acked_by)
        if definition is None:
            log.warning("alarm_definition_gone", alarm=track.alarm_id)

    def _save(self) -> bool:
        data = {
            "version": FORMAT_VERSION,
            "active": [alarm.to_json() for alarm in self.active()],
            "watched": [list(key) for key in sorted(self._last_good)],
            "history": [event.to_json() for event in self._history],
        }
        tmp = self.store_path.with_suffix(".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as out:
                json.dump(data, out, ensure_ascii=False)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.store_path)
        except OSError as exc:
            self.store_write_failures += 1
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._store_failing:
                log.error("alarm_store_write_failed", file=str(self.store_path), error=str(exc))
                self._store_failing = True
            return False
        if self._store_failing:
            log.info("alarm_store_write_recovered", file=str(self.store_path))
            self._store_failing = False
        self._dirty = False
        return True


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
