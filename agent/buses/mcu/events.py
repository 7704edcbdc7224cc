"""The cabinet MCU's events on their way to the platform.

An event goes up as the MCU made it, with its own timestamps: a door opened while the agent
was down still reaches the platform, stamped when it happened.
"""

from __future__ import annotations

import contextlib

from smartpole.agent.buses.capabilities import EventListener
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority
from smartpole.drivers.mcu.codes import EventKind
from smartpole.drivers.mcu.results import McuEvent

STREAM = "events"


def event_payload(event: McuEvent) -> dict[str, object]:
    kind = event.kind.name.lower() if isinstance(event.kind, EventKind) else event.kind
    return {
        "source": "mcu",
        "boot_id": event.boot_id,
        "id": event.id,
        "kind": kind,
        "value": event.value,
        "mcu_uptime_ms": event.uptime_ms,
        "mcu_time": event.unix_time,
    }


def recorder(outbox: Outbox) -> EventListener:
    """A listener that appends each event to the outbox stream ``events``."""

    def record(event: McuEvent) -> None:
        # A failed append is counted and logged once by the outbox; the event is in the log.
        with contextlib.suppress(OutboxError):
            outbox.append(STREAM, event_payload(event), priority=Priority.HIGH)

    return record
