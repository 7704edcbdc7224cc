"""A host that restarts resumes the MCU's event ring from what its owner already holds,
instead of fetching (and handing on) every event of the boot again.

The MCU keeps its ring across host restarts; ``get_event``'s cursor is its only
acknowledgement. Against the emulator on a real pty: a second client, as a restarted daemon
would make, gets only the events the first did not hand on."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartpole.drivers.mcu.client import McuClient
from smartpole.drivers.mcu.codes import EventKind
from smartpole.drivers.mcu.config import McuConfig, RelayConfig
from smartpole.drivers.mcu.events import EventTracker
from smartpole.drivers.mcu.results import McuEvent
from smartpole.drivers.sim.mcu.emulator import McuEmulator

CONFIG = McuConfig(relays=[RelayConfig(channel=1)], heartbeat_ms=2000)
FAST: dict[str, Any] = {"request_timeout_s": 2.0}


@pytest.fixture(autouse=True)
def no_leaked_fds() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) <= before


def raw(event_id: int) -> dict[str, int | bytes]:
    return {"tag": 0, "id": event_id, "kind": 2, "value": 0, "uptime_ms": 5, "unix_time": 0}


def test_a_tracker_resumed_from_a_cursor_and_ids_above_it_delivers_only_the_rest() -> None:
    tracker = EventTracker()
    tracker.set_boot(7, cursor=3, taken=[5, 2])  # 2 is below the cursor anyway
    assert tracker.cursor == 3
    assert tracker.pushed(raw(3)) is None
    assert tracker.polled(3, raw(5)) is None  # taken: not handed on again (nor lost)
    assert tracker.lost == 1  # 4 left the ring before it could be fetched
    event = tracker.pushed(raw(6))
    assert event is not None
    assert event.boot_id == 7
    tracker.set_boot(8, cursor=99)  # another boot: the owner's word is for that boot
    assert tracker.cursor == 99
    tracker.set_boot(8)  # the same boot again (a reconnect): keeps what it has
    assert tracker.cursor == 99


def test_taken_ids_that_close_the_gap_move_the_cursor() -> None:
    tracker = EventTracker()
    tracker.set_boot(1, cursor=2, taken=[3, 4, 6])
    assert tracker.cursor == 4
    assert tracker.behind(0)  # 5 is still missing
    assert tracker.pushed(raw(5)) is not None
    assert tracker.cursor == 6


@settings(max_examples=200, deadline=None)
@given(
    held=st.sets(st.integers(1, 30)),
    cursor=st.integers(0, 30),
    arrivals=st.lists(st.tuples(st.integers(1, 30), st.booleans()), max_size=60),
)
def test_every_event_not_held_is_delivered_once_and_a_held_one_never(
    held: set[int], cursor: int, arrivals: list[tuple[int, bool]]
) -> None:
    tracker = EventTracker()
    tracker.set_boot(1, cursor=cursor, taken=held)
    delivered: list[int] = []
    for event_id, pushed in arrivals:
        event = (
            tracker.pushed(raw(event_id))
            if pushed
            else tracker.polled(min(event_id - 1, tracker.cursor), raw(event_id))
        )
        if event is not None:
            delivered.append(event.id)
    assert len(delivered) == len(set(delivered))
    assert not [i for i in delivered if i <= cursor or i in held]


@pytest.mark.asyncio
async def test_a_restarted_host_does_not_get_the_boot_event_again() -> None:
    async with McuEmulator(seed=3) as emulator:
        first: list[McuEvent] = []
        async with McuClient(emulator.path, CONFIG, on_event=first.append, **FAST) as client:
            await emulator.wait_until(lambda: EventKind.BOOT in [e.kind for e in first])
            emulator.set_door(True)
            await emulator.wait_until(lambda: len(first) == 2, timeout_s=2)
            await client.poll_events()
        assert [(e.id, e.kind) for e in first] == [(1, EventKind.BOOT), (2, EventKind.DOOR_OPEN)]
        held = {(e.boot_id, e.id) for e in first}
        emulator.set_door(False)  # while no host listens

        def resume(boot_id: int) -> tuple[int, Iterable[int]]:
            ids = sorted(i for b, i in held if b == boot_id)
            return 0, ids

        second: list[McuEvent] = []
        async with McuClient(
            emulator.path, CONFIG, on_event=second.append, event_resume=resume, **FAST
        ) as client:
            await client.poll_events()
            await emulator.wait_until(lambda: len(second) >= 1, timeout_s=2)
            await client.poll_events()
        assert [(e.id, e.kind) for e in second] == [(3, EventKind.DOOR_CLOSED)]
        assert client.stats.events_lost == 0
