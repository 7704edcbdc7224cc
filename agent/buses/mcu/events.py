"""The cabinet MCU's events on their way to the platform, each exactly once.

An event goes up as the MCU made it, with its own timestamps: a door opened while the agent
was down still reaches the platform, stamped when it happened. Its identity is
``(device, boot_id, id)``: the MCU draws a random ``boot_id`` at every reset and numbers its
events from 1 within a boot. That is the platform's de-duplication key for MCU events, since
the envelope's ``(epoch, stream, seq)`` only covers one queued record.

Exactly once across restarts: the recorder appends the event to the outbox, makes it durable
(``Outbox.flush``) and only then marks its id in ``EventMarks`` (``event_marks.py``), from
which a restarted daemon resumes the MCU's ring instead of fetching the boot's events
again. An event held in memory because the outbox file fails is marked once a later append
proves it reached the file (held records are written first, in order) or the file is back
(``settle``); if the daemon stops before that, the event is not marked and the MCU hands it
over again next time. The one window left is a crash between the outbox's sync and the
write of the marks: the event is then queued again, with the same identity.
"""

from __future__ import annotations

import structlog

from smartpole.agent.buses.mcu.event_marks import EventMarks
from smartpole.agent.core.outbox import Outbox, OutboxError, Priority
from smartpole.drivers.mcu.codes import EventKind
from smartpole.drivers.mcu.results import McuEvent

log = structlog.get_logger("smartpole.mcu")

STREAM = "events"


def event_payload(event: McuEvent, device: str | None = None) -> dict[str, object]:
    kind = event.kind.name.lower() if isinstance(event.kind, EventKind) else event.kind
    return {
        "source": "mcu",
        "device": device,
        "boot_id": event.boot_id,
        "id": event.id,
        "kind": kind,
        "value": event.value,
        "mcu_uptime_ms": event.uptime_ms,
        "mcu_time": event.unix_time,
    }


class EventRecorder:
    """The listener of one MCU bus: appends each event to the stream ``events``, durably,
    then marks it."""

    def __init__(self, outbox: Outbox, marks: EventMarks, bus: str, device: str | None) -> None:
        self._outbox = outbox
        self._marks = marks
        self.bus = bus
        self.device = device
        self._unmarked: list[McuEvent] = []  # held in memory by the outbox, in order
        self.recorded = 0
        self.skipped = 0  # already queued by an earlier life (should not happen: counted)

    def __call__(self, event: McuEvent) -> None:
        if self._marks.holds(self.bus, event.boot_id, event.id):
            self.skipped += 1
            log.warning("mcu_event_already_queued", bus=self.bus, boot_id=event.boot_id,
                        id=event.id)  # fmt: skip
            return
        try:
            seq = self._outbox.append(
                STREAM, event_payload(event, self.device), priority=Priority.HIGH
            )
        except OutboxError:
            return  # counted and logged once by the outbox; unmarked, the MCU has it again
        self.recorded += 1
        self._unmarked.append(event)
        if seq is not None:  # on the file, and so is everything held before it
            self._mark()

    def settle(self) -> None:
        """The outbox file works again: what it held is on it now, so mark it."""
        if self._unmarked and self._outbox.available:
            self._mark()

    def _mark(self) -> None:
        self._outbox.flush()  # the record survives a power cut before its id is marked
        if not self._outbox.available:
            return  # the sync failed: the records wait for the file, unmarked
        events, self._unmarked = self._unmarked, []
        for event in events:
            self._marks.take(self.bus, event.boot_id, [event.id])
        self._marks.save()
