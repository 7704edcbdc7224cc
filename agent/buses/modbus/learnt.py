"""What each Modbus device refused, kept across restarts in ``modbus_learnt.json``.

A device that refuses a long read (exception 3) or a read across a hole (exception 2)
would otherwise be taught again after every restart, one refused request per lesson, each
one a poll whose later points are late. The file holds, per bus and device, the learnt
read caps per register kind and why each was learnt (``reasons``: ``exception 3`` or
``timeout``; a file written before reasons were kept has only exception-3 caps), the
barriers (holes) and the longest reads answered (``drivers/modbus/learning.py``).
Points the device refused are not kept: a device still booting may refuse what it
serves a minute later, and one refused request per point and restart is cheap.

Each entry names the device's profile and unit id; an entry for another profile or unit
(the device was swapped or readdressed) is dropped rather than applied to a device it
was not learnt from. Every Modbus bus task writes only its own section, synchronously
(read, replace the section, atomic write), so tasks of one event loop never interleave.
A damaged file is moved aside (``quarantine.py``) and the report handed upstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import structlog

from smartpole.agent.core.jsonfile import JsonFile, read_versioned
from smartpole.agent.core.quarantine import Damage
from smartpole.agent.core.state_schema import Schema
from smartpole.drivers.modbus.learning import CapReason, Learnt
from smartpole.drivers.modbus.plan import Barrier
from smartpole.drivers.modbus.points import RegisterKind

FILE_NAME: Final = "modbus_learnt.json"
FORMAT_VERSION: Final = 1
STORE: Final = "modbus_learnt"
SCHEMA: Final = Schema(STORE, FORMAT_VERSION)

log = structlog.get_logger("smartpole.state")


class LearntFile:
    """One bus's view of the file; ``state_dir`` None keeps nothing across restarts."""

    def __init__(
        self,
        state_dir: Path | None,
        bus: str,
        report_damage: Callable[[Damage], None] | None = None,
    ) -> None:
        self._bus = bus
        self._file = None if state_dir is None else JsonFile(state_dir / FILE_NAME, STORE)
        self._saved: dict[str, object] = {}
        if self._file is None:
            return
        data, damage = read_versioned(self._file.path, SCHEMA)
        if damage is not None and report_damage is not None:
            report_damage(damage)
        buses = data.get("buses") if data is not None else None
        section = buses.get(bus) if isinstance(buses, dict) else None
        if isinstance(section, dict):
            self._saved = {str(k): v for k, v in section.items()}

    @property
    def write_failures(self) -> int:
        return self._file.write_failures if self._file is not None else 0

    def load(self, device: str, identity: str) -> Learnt:
        """What was learnt of ``device`` when it was ``identity``; nothing if another."""
        entry = self._saved.get(device)
        if not isinstance(entry, dict) or entry.get("identity") != identity:
            return Learnt()
        caps = _per_kind(entry.get("caps"))
        learnt = Learnt(
            caps=caps,
            barriers=_barriers(entry.get("barriers")),
            accepted=_per_kind(entry.get("accepted")),
            reasons=_reasons(entry.get("reasons"), caps),
        )
        if learnt.caps or learnt.barriers:
            log.info(
                "modbus_learnt_restored", bus=self._bus, device=device,
                caps={k.value: v for k, v in learnt.caps.items()},
                reasons={k.value: v.value for k, v in learnt.reasons.items()},
                holes=len(learnt.barriers),
            )  # fmt: skip
        return learnt

    def save(self, devices: Mapping[str, tuple[str, Learnt]]) -> bool:
        """Replace this bus's section with ``devices`` (name: identity and lessons)."""
        if self._file is None:
            return True
        section = {
            name: to_json(identity, learnt)
            for name, (identity, learnt) in sorted(devices.items())
            if learnt.caps or learnt.barriers
        }
        buses = _current_buses(self._file.path)
        if section:
            buses[self._bus] = section
        else:
            buses.pop(self._bus, None)
        return self._file.write({"version": FORMAT_VERSION, "buses": buses}, indent=1)


def to_json(identity: str, learnt: Learnt) -> dict[str, object]:
    return {
        "identity": identity,
        "caps": {kind.value: cap for kind, cap in sorted(learnt.caps.items())},
        "reasons": _reasons_json(learnt),
        "barriers": [[kind.value, at] for kind, at in sorted(learnt.barriers)],
        "accepted": {kind.value: n for kind, n in sorted(learnt.accepted.items())},
    }


def learnt_view(learnt: Learnt) -> dict[str, object]:
    """What ``diag plan`` lists under ``(learnt)`` for one device."""
    return {
        "max_per_read": {kind.value: cap for kind, cap in sorted(learnt.caps.items())},
        "max_per_read_reason": _reasons_json(learnt),
        "holes": [{"kind": kind.value, "at": at} for kind, at in sorted(learnt.barriers)],
        "unsupported": sorted(learnt.unsupported),
    }


def _reasons_json(learnt: Learnt) -> dict[str, str]:
    return {
        kind.value: learnt.reasons.get(kind, CapReason.EXCEPTION_3).value
        for kind in sorted(learnt.caps)
    }


def _current_buses(path: Path) -> dict[str, object]:
    """The other buses' sections as on disk now (loading already set a damaged file aside;
    one damaged since is overwritten by this write rather than kept)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    buses = data.get("buses") if isinstance(data, dict) else None
    return {str(k): v for k, v in buses.items()} if isinstance(buses, dict) else {}


def _per_kind(raw: object) -> dict[RegisterKind, int]:
    if not isinstance(raw, dict):
        return {}
    kinds = {kind.value: kind for kind in RegisterKind}
    return {
        kinds[key]: value
        for key, value in raw.items()
        if key in kinds and _count(value) and value <= (2000 if kinds[key].is_bit else 125)
    }


def _reasons(raw: object, caps: Mapping[RegisterKind, int]) -> dict[RegisterKind, CapReason]:
    """Why each cap was learnt; a cap without a (known) reason came from exception 3, the
    only one there was before reasons were kept."""
    given = raw if isinstance(raw, dict) else {}
    known = {reason.value: reason for reason in CapReason}
    return {kind: known.get(str(given.get(kind.value)), CapReason.EXCEPTION_3) for kind in caps}


def _barriers(raw: object) -> set[Barrier]:
    if not isinstance(raw, list):
        return set()
    kinds = {kind.value: kind for kind in RegisterKind}
    found: set[Barrier] = set()
    for item in raw:
        if isinstance(item, list) and len(item) == 2:
            kind, at = item
            if kind in kinds and _count(at) and at <= 0xFFFF:
                found.add((kinds[kind], at))
    return found


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
