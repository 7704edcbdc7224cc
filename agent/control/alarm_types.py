"""What happens to an alarm: the events of its lifecycle, and active-alarm records.

The vocabulary shared by the manager (``alarms.py``), its store (``alarm_store.py``) and the
safety functions (``safety.py``), without the manager's state machine. What an alarm *is*
(``AlarmDefinition``: one alarm function, in the spirit of TALQ's, saying where a reading
stands) is part of the pole config, in ``config/alarms.py``. An ``AlarmEvent`` is one
transition (raised, cleared, acknowledged) as it goes to the outbox
and the store; an ``Alarm`` is a snapshot of one active alarm, taken from a ``Track``: the
manager's mutable state of one (source, kind) pair, which a store entry restores. All are
free of I/O and all but ``Track`` are immutable; each record turns into JSON and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from smartpole.agent.config.alarms import AlarmDefinition, Reading
from smartpole.agent.core.errors import AgentError

__all__ = [
    "Alarm",
    "AlarmError",
    "AlarmEvent",
    "EventType",
    "Track",
]


class AlarmError(AgentError):
    """Alarm definitions that cannot work together, or an alarm that does not exist."""


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
        self.pending_since: float | None = None  # debounce toward the other state (monotonic)

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
