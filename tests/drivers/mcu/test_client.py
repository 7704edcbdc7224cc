"""McuClient against the emulated MCU on a real pty: connect, configure, requests, faults,
resets, refused dictionaries, fallback and events."""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpole.drivers.errors import DeviceTimeoutError, DriverError, TransportError
from smartpole.drivers.mcu.client import McuClient
from smartpole.drivers.mcu.codes import ErrorCode, EventKind, LevelSource
from smartpole.drivers.mcu.config import McuConfig, RelayConfig, ScheduleStep
from smartpole.drivers.mcu.dictionary import DICTIONARY, DICTIONARY_BYTES
from smartpole.drivers.mcu.errors import (
    McuCommandError,
    McuConfigError,
    McuDictionaryError,
    McuResetError,
    McuVersionError,
)
from smartpole.drivers.mcu.events import EventTracker
from smartpole.drivers.mcu.results import McuEvent
from smartpole.drivers.sim.mcu.emulator import McuEmulator
from smartpole.drivers.sim.mcu.wire import Faults

CONFIG = McuConfig(
    relays=[
        RelayConfig(channel=1, default_on=True),
        RelayConfig(channel=2, default_on=False),
        RelayConfig(channel=3, default_on=True, max_duration_ms=60_000),
    ],
    heartbeat_ms=2000,
    fallback_level=70,
    lease_ms=60_000,
    leakage_trip_ua=30_000,
    leakage_relay_mask=0b011,
    tilt_cdeg=500,
    impact_mg=2000,
)
VERSION_2 = DICTIONARY_BYTES.replace(b'"version":1', b'"version":2')
FAST: dict[str, Any] = {"request_timeout_s": 2.0}


@dataclass
class Rig:
    emulator: McuEmulator
    client: McuClient
    events: list[McuEvent] = field(default_factory=list)

    def kinds(self) -> list[EventKind | int]:
        return [event.kind for event in self.events]


@pytest.fixture(autouse=True)
def no_leaked_fds() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) <= before


@asynccontextmanager
async def rig(
    config: McuConfig = CONFIG, *, faults: Faults | None = None, seed: int = 1, **kwargs: Any
) -> AsyncIterator[Rig]:
    events: list[McuEvent] = []
    async with (
        McuEmulator(seed=seed, faults=faults) as emulator,
        McuClient(emulator.path, config, on_event=events.append, **{**FAST, **kwargs}) as client,
    ):
        yield Rig(emulator, client, events)


async def heartbeat(client: McuClient) -> None:
    await client.heartbeat(int(time.time()), 60)


# ----- configuration ----------------------------------------------------------------------


def test_config_messages_order_and_crc() -> None:
    shuffled = McuConfig(
        relays=[RelayConfig(3), RelayConfig(1, default_on=False)],
        schedule=[ScheduleStep(1080, 100), ScheduleStep(360, 0)],
    )
    names = [name for name, _ in shuffled.messages()]
    assert names == [
        "config_relay",
        "config_relay",
        "config_fallback",
        "config_schedule",
        "config_schedule",
        "config_leakage",
        "config_alarms",
    ]
    assert shuffled.messages()[0][1] == {"channel": 1, "default_on": 0, "max_duration_ms": 0}
    assert shuffled.messages()[3][1] == {"index": 0, "minute": 360, "level": 0}
    encoded = b"".join(DICTIONARY.encode(n, **a) for n, a in shuffled.messages())
    assert shuffled.crc(DICTIONARY) == zlib.crc32(encoded)
    same = McuConfig(
        relays=[RelayConfig(1, default_on=False), RelayConfig(3)],
        schedule=[ScheduleStep(360, 0), ScheduleStep(1080, 100)],
    )
    assert same == shuffled
    assert same.crc(DICTIONARY) == shuffled.crc(DICTIONARY)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: McuConfig(heartbeat_ms=99), "heartbeat_ms"),
        (lambda: McuConfig(heartbeat_ms=600_001), "heartbeat_ms"),
        (lambda: McuConfig(lease_ms=86_400_001), "lease_ms"),
        (lambda: McuConfig(fallback_level=101), "fallback_level"),
        (lambda: RelayConfig(channel=9), "channel"),
        (lambda: RelayConfig(channel=1, max_duration_ms=86_400_001), "max_duration_ms"),
        (lambda: McuConfig(relays=[RelayConfig(2), RelayConfig(2)]), "twice"),
        (lambda: ScheduleStep(minute=1440, level=0), "minute"),
        (lambda: ScheduleStep(minute=0, level=101), "level"),
        (lambda: McuConfig(schedule=[ScheduleStep(i, 0) for i in range(9)]), "at most 8"),
        (lambda: McuConfig(schedule=[ScheduleStep(5, 0), ScheduleStep(5, 9)]), "one minute"),
        (lambda: McuConfig(leakage_relay_mask=256), "leakage_relay_mask"),
        (lambda: McuConfig(tilt_cdeg=-1), "tilt_cdeg"),
    ],
)
def test_config_limits_are_refused_clearly(build: Any, words: str) -> None:
    with pytest.raises(McuConfigError, match=words):
        build()


# ----- connecting -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_connect_identifies_and_configures() -> None:
    async with rig() as r:
        identity = r.client.identity
        assert identity is not None
        assert identity.resumed is False
        assert identity.version == 1
        assert identity.build == "smartpole-mcu 1.0.0"
        assert identity.window == 4
        assert identity.boot_id == r.emulator.boot_id
        assert identity.config_crc == CONFIG.crc(DICTIONARY) == r.emulator.outputs.config_crc
        assert r.emulator.outputs.configured
        active = r.emulator.twin.active_config
        assert [relay.default_on for relay in active.relays[:3]] == [True, False, True]
        assert (active.heartbeat_ms, active.fallback_level, active.trip_mask) == (2000, 70, 3)
        stats = r.client.stats
        assert (stats.connects, stats.reconfigures, stats.resumes) == (1, 1, 0)
        await r.emulator.wait_until(lambda: EventKind.BOOT in r.kinds(), timeout_s=2)


@pytest.mark.asyncio
async def test_reconnect_resumes_and_a_changed_config_reconfigures() -> None:
    async with McuEmulator(seed=2) as emu:
        async with McuClient(emu.path, CONFIG, **FAST) as client:
            await heartbeat(client)
            assert (await client.set_relay(2, True)).is_on(2)
            assert (await client.set_level(30)).level == 30
        before = emu.outputs
        # A restarted host: same configuration, MCU still running -> resume, seq resync.
        async with McuClient(emu.path, CONFIG, **FAST) as client:
            assert client.identity is not None
            assert client.identity.resumed is True
            stats = client.stats
            assert (stats.resumes, stats.reconfigures) == (1, 0)
            assert stats.link.seq_resyncs == 1
            assert emu.outputs == before
        # A boot id the host does not know is another MCU's configuration: reconfigure.
        async with McuClient(emu.path, CONFIG, boot_id=emu.boot_id ^ 1, **FAST) as client:
            assert client.identity is not None
            assert client.identity.resumed is False
        # A changed configuration is sent again; the outputs do not blink.
        changed = McuConfig(relays=CONFIG.relays, fallback_level=20, heartbeat_ms=2000)
        async with McuClient(emu.path, changed, **FAST) as client:
            assert client.identity is not None
            assert client.identity.resumed is False
            assert emu.outputs.config_crc == changed.crc(DICTIONARY) != CONFIG.crc(DICTIONARY)
            assert emu.twin.active_config.fallback_level == 20
            assert emu.outputs.relays & 0b10  # relay 2 still on, as the first host set it


@pytest.mark.asyncio
async def test_unknown_version_is_refused_counted_and_connects_once_reflashed() -> None:
    """The client refuses each connect to an MCU it cannot speak to and never retries by
    itself; its owner's next connect succeeds once the MCU was flashed."""
    async with McuEmulator(seed=3, dictionary=VERSION_2) as emu:
        with pytest.raises(McuVersionError, match="version 2") as refused:
            async with McuClient(emu.path, CONFIG, **FAST):
                pass
        assert refused.value.version == 2
        client = McuClient(emu.path, CONFIG, **FAST)
        client.open()
        try:
            for _ in range(3):
                with pytest.raises(McuVersionError):
                    await client.connect()
            assert client.stats.version_refusals == client.stats.connect_failures == 3
            assert not client.connected
            emu.reset(dictionary=DICTIONARY_BYTES)  # the MCU was flashed with version 1
            identity = await client.connect()
            assert identity.version == 1
            assert client.connected
        finally:
            await client.aclose()


@pytest.mark.asyncio
async def test_changed_message_format_is_refused() -> None:
    changed = DICTIONARY_BYTES.replace(
        b"set_relay tag=%c channel=%c on=%c", b"set_relay tag=%c channel=%c on=%u"
    )
    async with McuEmulator(seed=4, dictionary=changed) as emu:
        client = McuClient(emu.path, CONFIG, **FAST)
        client.open()
        try:
            with pytest.raises(McuDictionaryError, match="set_relay"):
                await client.connect()
            assert client.stats.dictionary_refusals == 1
            with pytest.raises(DeviceTimeoutError):
                await client.get_inputs(timeout_s=0.05)  # not connected
        finally:
            await client.aclose()


@pytest.mark.asyncio
async def test_an_mcu_falling_silent_during_identify_is_a_timeout() -> None:
    async with McuEmulator(seed=6) as emu:
        client = McuClient(emu.path, CONFIG, request_timeout_s=0.3)
        client.open()
        try:
            connecting = asyncio.create_task(client.connect())
            # Silent once the first chunk is in: the batch of chunks after it times out.
            await emu.wait_until(lambda: client.stats.link.frames_received >= 2, timeout_s=2)
            emu.set_faults(silent=True)
            with pytest.raises(DeviceTimeoutError, match="identify"):
                await connecting
            assert client.stats.connect_failures == 1
            assert not client.connected
        finally:
            await client.aclose()


@pytest.mark.asyncio
async def test_closed_client_and_missing_port_raise_transport_errors() -> None:
    with pytest.raises(TransportError):
        async with McuClient("/dev/does-not-exist", CONFIG):
            pass
    async with rig() as r:
        pass
    with pytest.raises(TransportError):
        await r.client.get_inputs()


# ----- requests -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_requests_return_typed_results_in_physical_units() -> None:
    async with rig() as r:
        r.emulator.set_tilt(1.5, -2.25)
        r.emulator.set_leakage(12.5)
        r.emulator.set_temperature(-4.5)
        r.emulator.set_supply(23.9)
        r.emulator.set_door(True)
        r.emulator.set_photocell(dark=True)
        inputs = await r.client.get_inputs()
        assert (inputs.tilt_x_deg, inputs.tilt_y_deg) == (1.5, -2.25)
        assert inputs.leakage_ma == 12.5
        assert inputs.temperature_c == -4.5
        assert inputs.supply_v == pytest.approx(23.9)
        assert inputs.door_open
        assert inputs.photocell_dark is True
        status = await r.client.heartbeat(1_700_000_000, 60)
        assert status.configured
        assert status.clock_valid
        assert not status.fallback
        assert status.boot_id == r.emulator.boot_id
        relay = await r.client.set_relay(3, False)
        assert not relay.is_on(3)
        assert relay.relays_on == {1, 2, 4, 5, 6, 7, 8}  # boot: all on, configuring kept them
        level = await r.client.set_level(55)
        assert (level.level, level.source) == (55, LevelSource.HOST)
        mcu = await r.client.get_stats()
        assert mcu.rx_frames > 0
        with pytest.raises(ValueError, match="channel"):
            await r.client.set_relay(9, True)
        assert r.client.stats.requests >= 5


@pytest.mark.asyncio
async def test_concurrent_requests_under_heavy_faults_take_effect_exactly_once() -> None:
    patient = McuConfig(relays=CONFIG.relays, heartbeat_ms=60_000)  # no fallback mid-test
    async with rig(patient, attempts=12, request_timeout_s=10.0) as r:
        await heartbeat(r.client)
        r.emulator.faults = Faults(drop=0.1, corrupt=0.05, garbage=0.05, delay_s=0.002)

        async def relay_worker(channel: int) -> None:
            for i in range(12):
                on = i % 2 == 0
                state = await r.client.set_relay(channel, on)
                assert state.is_on(channel) == on  # this request's own answer

        async def level_worker() -> None:
            for level in range(0, 100, 7):
                assert (await r.client.set_level(level)).level == level

        async def beat() -> None:
            for _ in range(6):
                await heartbeat(r.client)

        async with asyncio.TaskGroup() as group:
            for channel in (1, 2, 3):
                group.create_task(relay_worker(channel))
            group.create_task(level_worker())
            group.create_task(beat())
        r.emulator.faults = Faults()
        outputs = r.emulator.outputs
        assert outputs.relays & 0b111 == 0b000  # every channel's last request was "off"
        assert outputs.level == 98
        stats = r.client.stats
        to_mcu, to_host = r.emulator.line_stats
        assert to_mcu.dropped + to_host.dropped > 0
        assert stats.link.retransmits > 0
        assert stats.link.discards > 0
        assert stats.re_requests > 0  # answers lost on the wire were asked for again
        assert stats.link.timeouts == 0  # and no request ever ran out of time
        mcu = await r.client.get_stats()
        assert mcu.rx_errors > 0


async def _connect_under_faults(seed: int, faults: Faults) -> None:
    # RTO backoff (up to 2 s) after consecutive losses is the spec's: allow for a few.
    async with rig(faults=faults, seed=seed, attempts=20, request_timeout_s=10.0) as r:
        assert r.emulator.outputs.config_crc == CONFIG.crc(DICTIONARY)
        await heartbeat(r.client)
        for level in (10, 20, 30):
            assert (await r.client.set_level(level)).level == level
        assert r.emulator.outputs.level == 30


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    drop=st.sampled_from([0.02, 0.05, 0.1]),
    corrupt=st.sampled_from([0.0, 0.05]),
    garbage=st.sampled_from([0.0, 0.05]),
)
def test_connect_and_configure_through_random_faults(
    seed: int, drop: float, corrupt: float, garbage: float
) -> None:
    asyncio.run(_connect_under_faults(seed, Faults(drop=drop, corrupt=corrupt, garbage=garbage)))


# ----- resets -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_mcu_reset_mid_conversation_fails_in_flight_and_reconfigures() -> None:
    async with rig() as r:
        await heartbeat(r.client)
        await r.client.set_level(40)
        r.emulator.set_faults(silent=True)
        in_flight = asyncio.create_task(r.client.set_level(41, timeout_s=2))
        await r.emulator.wait_until(lambda: r.client.stats.link.frames_sent > 0, timeout_s=1)
        old_boot = r.emulator.boot_id
        r.emulator.set_faults(silent=False)
        r.emulator.reset(mid_frame=True)
        with pytest.raises(McuResetError):
            await in_flight
        assert not r.client.connected
        with pytest.raises(McuResetError):  # at once: nobody will connect it but its owner
            await r.client.get_inputs(timeout_s=5)
        assert r.client.stats.connects == 1  # it did not reconnect by itself
        identity = await r.client.connect()
        assert identity.boot_id == r.emulator.boot_id != old_boot
        assert identity.resumed is False
        assert r.emulator.outputs.configured
        assert r.emulator.outputs.config_crc == CONFIG.crc(DICTIONARY)
        stats = r.client.stats
        assert (stats.resets_detected, stats.reconnects, stats.connects) == (1, 1, 2)
        await heartbeat(r.client)
        assert (await r.client.set_level(42)).level == 42
        await r.emulator.wait_until(lambda: r.kinds().count(EventKind.BOOT) == 2, timeout_s=2)
        assert {event.boot_id for event in r.events} == {old_boot, identity.boot_id}


@pytest.mark.asyncio
async def test_reset_into_an_unknown_version_is_refused_until_reflashed() -> None:
    async with rig() as r:
        r.emulator.reset(dictionary=VERSION_2)
        with pytest.raises(McuResetError):
            await heartbeat(r.client)
        for _ in range(2):
            with pytest.raises(McuVersionError):
                await r.client.connect()
        assert r.client.stats.version_refusals == 2
        assert not r.client.connected
        with pytest.raises(DriverError):
            await r.client.get_inputs(timeout_s=0.05)
        r.emulator.reset(dictionary=DICTIONARY_BYTES)
        await r.client.connect()
        assert r.client.stats.reconnects == 1
        assert r.emulator.outputs.configured


# ----- the MCU's own logic seen from the host -------------------------------------------


@pytest.mark.asyncio
async def test_heartbeat_lapse_falls_back_then_control_resumes() -> None:
    config = McuConfig(relays=CONFIG.relays, heartbeat_ms=300, fallback_level=70)
    async with rig(config) as r:
        await heartbeat(r.client)
        last_beat = asyncio.get_running_loop().time()
        assert (await r.client.set_level(30)).level == 30
        await r.emulator.wait_until(lambda: r.emulator.outputs.fallback, timeout_s=2)
        lapsed = asyncio.get_running_loop().time() - last_beat
        assert 0.28 <= lapsed <= 0.3 + 0.1
        outputs = r.emulator.outputs
        assert (outputs.level, outputs.source) == (70, LevelSource.FALLBACK_LEVEL)
        with pytest.raises(McuCommandError) as refused:
            await r.client.set_level(30)
        assert refused.value.error_code is ErrorCode.FALLBACK_ACTIVE
        status = await r.client.heartbeat(int(time.time()), 0)
        assert not status.fallback
        assert (await r.client.set_level(35)).source is LevelSource.HOST
        await r.emulator.wait_until(
            lambda: (
                EventKind.FALLBACK_LEFT in r.kinds() and EventKind.FALLBACK_ENTERED in r.kinds()
            ),
            timeout_s=2,
        )


@pytest.mark.asyncio
async def test_leakage_trip_is_pushed_with_mcu_timestamps() -> None:
    async with rig() as r:
        unix_time = int(time.time())
        await r.client.heartbeat(unix_time, 0)
        await r.client.set_relay(2, True)
        r.emulator.set_leakage(45.0)
        await r.emulator.wait_until(lambda: EventKind.LEAKAGE_TRIP in r.kinds(), timeout_s=2)
        trip = next(e for e in r.events if e.kind is EventKind.LEAKAGE_TRIP)
        assert trip.pushed
        assert trip.value == 45_000
        assert trip.uptime_ms > 0
        assert trip.unix_time is not None
        assert abs(trip.unix_time - unix_time) <= 2
        assert trip.boot_id == r.emulator.boot_id
        state = await r.client.set_relay(2, True)
        assert state.tripped
        assert not state.is_on(2)
        with pytest.raises(McuCommandError, match="tripped"):
            await r.client.clear_trip()
        r.emulator.set_leakage(1.0)
        assert not (await r.client.clear_trip()).tripped
        await r.emulator.wait_until(lambda: EventKind.TRIP_CLEARED in r.kinds(), timeout_s=2)


@pytest.mark.asyncio
async def test_lost_events_are_recovered_by_get_event_and_gaps_counted() -> None:
    async with rig() as r:
        await r.emulator.wait_until(lambda: EventKind.BOOT in r.kinds(), timeout_s=2)
        r.emulator.set_faults(silent=True)  # every push of the next 20 events is lost
        for n in range(20):
            r.emulator.set_door(n % 2 == 0)
            await r.emulator.wait_until(lambda: r.emulator.twin.last_event == n + 2)  # noqa: B023
        r.emulator.set_faults(silent=False)
        await r.client.poll_events()  # (a background poll may have found them first)
        found = [e for e in r.events if e.id > 1]
        assert [e.id for e in found] == list(range(6, 22))  # the ring holds 16
        assert all(not e.pushed for e in found)
        assert r.client.stats.events_lost == 4
        # Pushes lost on the wire: the next push shows the gap, get_event fills it.
        r.emulator.set_faults(drop=1.0, direction="to_host")
        r.emulator.set_water(True)
        await r.emulator.wait_until(lambda: r.emulator.twin.last_event == 22)
        r.emulator.set_faults(drop=0.0)
        r.emulator.set_water(False)
        await r.emulator.wait_until(lambda: {22, 23} <= {e.id for e in r.events}, timeout_s=2)
        ids = [e.id for e in r.events]
        assert sorted(ids) == [1, *range(6, 24)]  # every event once; 2..5 left the ring
        recovered = next(e for e in r.events if e.id == 22)
        assert recovered.kind is EventKind.WATER_DETECTED
        assert not recovered.pushed


def test_event_tracker_dedups_by_boot_and_id_and_counts_gaps() -> None:
    def raw(event_id: int) -> dict[str, int | bytes]:
        return {"tag": 0, "id": event_id, "kind": 2, "value": 0, "uptime_ms": 5, "unix_time": 0}

    tracker = EventTracker()
    tracker.set_boot(7)
    assert tracker.pushed(raw(1)) is not None
    assert tracker.pushed(raw(3)) is not None  # 2 is missing for now
    assert tracker.behind(0)
    assert tracker.cursor == 1
    polled = tracker.polled(1, raw(2))
    assert polled is not None
    assert polled.boot_id == 7
    assert tracker.cursor == 3
    assert tracker.polled(1, raw(3)) is None  # pushed already
    assert tracker.duplicates == 1
    event = tracker.polled(3, raw(9))  # the ring dropped 4..8
    assert event is not None
    assert tracker.lost == 5
    assert tracker.cursor == 9
    tracker.set_boot(8)  # a new boot counts from 1 again
    assert tracker.pushed(raw(1)) is not None
    assert tracker.delivered == 5
