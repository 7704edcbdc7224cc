"""Which MCU events are already in the outbox, per bus, kept across restarts.

The MCU keeps its event ring across host restarts and knows no acknowledgement but the
host's ``get_event`` cursor, so a host that forgets its cursor gets every event of the boot
again, and each would be queued again under a new outbox sequence number (which the
platform cannot de-duplicate). ``mcu_events.json`` in the state directory holds, per bus,
the MCU boot and which of its event ids were appended to the outbox and made durable there:
the highest id up to which all are, and the ids above it that are too. The bus task starts
its event tracker from it (``resume``). An id is marked only after its record is on the
outbox file (``recorder`` in ``events.py``): marking follows the durable append.

Only the latest boot of each bus is kept: a new boot's events start again from id 1. Ids
above the cursor that stay apart (their predecessors lost from the MCU's ring, or refused
by the outbox) are kept up to ``MAX_ABOVE``; beyond that the oldest gap is given up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from smartpole.agent.buses.capabilities import EventResume
from smartpole.agent.core.jsonfile import JsonFile, read_versioned
from smartpole.agent.core.quarantine import Damage
from smartpole.agent.core.state_schema import Schema

FILE_NAME: Final = "mcu_events.json"
FORMAT_VERSION: Final = 1
SCHEMA: Final = Schema("mcu_events", FORMAT_VERSION)
MAX_ABOVE: Final = 256


@dataclass
class BootMarks:
    """One MCU boot's events held: every id up to ``cursor``, and those in ``above``."""

    boot_id: int
    cursor: int = 0
    above: set[int] = field(default_factory=set)

    def take(self, event_id: int) -> bool:
        """Mark ``event_id``; False if it was already."""
        if event_id <= self.cursor or event_id in self.above:
            return False
        self.above.add(event_id)
        while self.cursor + 1 in self.above:
            self.cursor += 1
            self.above.discard(self.cursor)
        while len(self.above) > MAX_ABOVE:
            self.cursor = min(self.above)  # give up the oldest gap
            self.above = {i for i in self.above if i > self.cursor}
            while self.cursor + 1 in self.above:
                self.cursor += 1
                self.above.discard(self.cursor)
        return True

    def holds(self, event_id: int) -> bool:
        return event_id <= self.cursor or event_id in self.above

    def to_json(self) -> dict[str, object]:
        return {"boot_id": self.boot_id, "cursor": self.cursor, "above": sorted(self.above)}


class EventMarks:
    """The marks of every MCU bus; ``state_dir`` None keeps them in memory only."""

    def __init__(self, state_dir: Path | None) -> None:
        self._boots: dict[str, BootMarks] = {}
        self._file = None if state_dir is None else JsonFile(state_dir / FILE_NAME, "mcu_events")
        self.damage: Damage | None = None
        if self._file is not None:
            self._load(self._file.path)

    def resume(self, bus: str) -> EventResume:
        """For the bus task: what of a boot is already held (nothing of an unknown boot)."""

        def held(boot_id: int) -> tuple[int, Iterable[int]]:
            marks = self._boots.get(bus)
            if marks is None or marks.boot_id != boot_id:
                return 0, ()
            return marks.cursor, frozenset(marks.above)

        return held

    def holds(self, bus: str, boot_id: int, event_id: int) -> bool:
        marks = self._boots.get(bus)
        return marks is not None and marks.boot_id == boot_id and marks.holds(event_id)

    def take(self, bus: str, boot_id: int, event_ids: Iterable[int]) -> None:
        """Mark events of ``boot_id`` as durably queued (in memory; ``save`` writes)."""
        marks = self._boots.get(bus)
        if marks is None or marks.boot_id != boot_id:
            marks = self._boots[bus] = BootMarks(boot_id)
        for event_id in event_ids:
            marks.take(event_id)

    def save(self) -> bool:
        if self._file is None:
            return True
        buses = {bus: marks.to_json() for bus, marks in sorted(self._boots.items())}
        return self._file.write({"version": FORMAT_VERSION, "buses": buses})

    @property
    def write_failures(self) -> int:
        return self._file.write_failures if self._file is not None else 0

    def _load(self, path: Path) -> None:
        data, self.damage = read_versioned(path, SCHEMA)
        buses = data.get("buses") if data is not None else None
        if not isinstance(buses, dict):
            return
        for bus, entry in buses.items():
            marks = _parse(entry)
            if isinstance(bus, str) and marks is not None:
                self._boots[bus] = marks


def _parse(entry: object) -> BootMarks | None:
    """One bus's marks, or None if the entry is not what ``to_json`` writes."""
    if not isinstance(entry, dict):
        return None
    boot_id, cursor, above = entry.get("boot_id"), entry.get("cursor"), entry.get("above")
    if not (isinstance(boot_id, int) and isinstance(cursor, int) and isinstance(above, list)):
        return None
    if not all(_count(i) for i in (boot_id, cursor, *above)):
        return None
    marks = BootMarks(boot_id, cursor)
    for event_id in above:
        marks.take(event_id)
    return marks


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
