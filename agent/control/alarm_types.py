"""What an alarm is: its definition, the events of its lifecycle, and active-alarm records.

Split out of ``alarms.py`` so the vocabulary shared by the manager (``alarms.py``), its
store (``alarm_store.py``), the config (``rules.py``) and the safety functions
(``safety.py``) does not carry the manager's state machine with it. An ``AlarmDefinition``
(one alarm function, in the spirit of TALQ's) says where a reading stands (``Condition``);
an ``AlarmEvent`` is one transition (raised, cleared, acknowledged) as it goes to the outbox
and the store; an ``Alarm`` is a snapshot of one active alarm, taken from a ``Track``: the
manager's mutable state of one (source, kind) pair, which a store entry restores. All are
free of I/O and all but ``Track`` are immutable; each record turns into JSON and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.core.errors import AgentError

__all__ = [
    "Alarm",
    "AlarmDefinition",
    "AlarmError",
    "AlarmEvent",
    "Condition",
    "EventType",
    "Kind",
    "Reading",
    "Severity",
    "Track",
]

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


class Track:
    """The state of one (source, kind) pair, active or not: ``AlarmManager``'s own record,
    mutable, of which ``snapshot`` gives the ``Alarm`` others see."""

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

    def restore(self, item: dict[str, object]) -> None:
        """Make this the active alarm a store entry (``Alarm.to_json``'s) describes."""
        self.active = True
        self.severity = str(item["severity"])
        self.raised_at = _float(item["raised_at"])
        value = item.get("value")
        self.value = value if isinstance(value, bool | int | float) else None
        # Without a definition nothing can clear it from readings; acknowledging does.
        self.condition = bool(item.get("condition_present", True)) and self.definition is not None
        acked_at, acked_by = item.get("acknowledged_at"), item.get("acknowledged_by")
        self.acknowledged_at = None if acked_at is None else _float(acked_at)
        self.acknowledged_by = None if acked_by is None else str(acked_by)


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)
