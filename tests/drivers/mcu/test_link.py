"""The MCU link (seq/ack/NAK, go-back-N, RTO, resync) against the emulated MCU on a real pty.

Exactly-once delivery is observed through the MCU's own running configuration CRC: every
``config_*`` message it accepts is folded into it, so the CRC equals the CRC of the sent
messages only if each was processed once, in order, with nothing extra.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpole.drivers.errors import TransportError
from smartpole.drivers.mcu.dictionary import DICTIONARY
from smartpole.drivers.mcu.link import McuLink
from smartpole.drivers.mcu.msgproto import Message
from smartpole.drivers.mcu.requests import RequestChannel
from smartpole.drivers.mcu.rto import MAX_RTO_S, MIN_RTO_S, RtoEstimator
from smartpole.drivers.sim.mcu.emulator import McuEmulator
from smartpole.drivers.sim.mcu.wire import Direction, Faults

WINDOW = DICTIONARY.window
DIRECTIONS: list[Direction] = ["both", "to_mcu", "to_host"]


def schedule_messages(count: int, start: int = 0) -> list[bytes]:
    """Distinct config messages (the MCU folds each into its CRC)."""
    return [
        DICTIONARY.encode("config_schedule", index=i % 8, minute=i % 1440, level=i % 101)
        for i in range(start, start + count)
    ]


def crc_of(messages: list[bytes]) -> int:
    return zlib.crc32(b"".join(messages))


@pytest.fixture
def no_leaked_fds() -> Iterator[None]:
    before = set(os.listdir("/proc/self/fd"))
    yield
    assert set(os.listdir("/proc/self/fd")) <= before


@pytest_asyncio.fixture
async def emulator(no_leaked_fds: None) -> AsyncIterator[McuEmulator]:
    async with McuEmulator(seed=7) as emu:
        yield emu


# ----- RFC 6298 arithmetic ----------------------------------------------------------------


def test_rto_starts_at_100_ms_and_follows_rfc_6298() -> None:
    rto = RtoEstimator()
    assert rto.rto_s == pytest.approx(0.100)
    rto.sample(0.040)  # first sample: SRTT = R, RTTVAR = R / 2
    assert rto.srtt_s == pytest.approx(0.040)
    assert rto.rto_s == pytest.approx(0.040 + 4 * 0.020)
    rto.sample(0.040)  # RTTVAR = 3/4 * 0.02 + 1/4 * 0 ; SRTT unchanged
    assert rto.rto_s == pytest.approx(0.040 + 4 * 0.015)


def test_rto_bounds_backoff_and_granularity() -> None:
    rto = RtoEstimator()
    for _ in range(50):
        rto.sample(0.0001)
    assert rto.rto_s == MIN_RTO_S  # G = 1 ms would give less: the floor holds
    seen = [rto.rto_s]
    for _ in range(10):
        rto.back_off()
        seen.append(rto.rto_s)
    assert seen[:4] == pytest.approx([0.025, 0.05, 0.1, 0.2])
    assert seen[-1] == MAX_RTO_S
    rto.sample(0.010)  # a fresh sample ends the backoff
    assert rto.rto_s < MAX_RTO_S


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=50))
def test_rto_always_within_bounds(samples: list[float]) -> None:
    rto = RtoEstimator()
    for sample in samples:
        rto.sample(sample)
        assert MIN_RTO_S <= rto.rto_s <= MAX_RTO_S
        rto.back_off()
        assert MIN_RTO_S <= rto.rto_s <= MAX_RTO_S


# ----- the link on a pty ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_messages_are_delivered_once_in_order_and_packed(emulator: McuEmulator) -> None:
    payloads: list[bytes] = []
    async with McuLink(emulator.path, on_payload=payloads.append) as link:
        link.configure(window=WINDOW)
        messages = schedule_messages(60)
        await asyncio.gather(*(link.send(m) for m in messages))
        await asyncio.wait_for(link.drain(), 5)
        stats = link.stats
    assert emulator.outputs.config_crc == crc_of(messages)
    assert stats.messages_sent == 60
    assert stats.frames_sent < 60  # queued messages shared frames
    assert stats.retransmits == stats.naks == stats.seq_resyncs == 0
    assert stats.srtt_ms is not None
    assert payloads  # the MCU's boot event push arrived


@pytest.mark.asyncio
async def test_window_one_before_identify(emulator: McuEmulator) -> None:
    async with McuLink(emulator.path) as link:
        assert link.window == 1
        first = asyncio.create_task(link.send(schedule_messages(1)[0]))
        await first
        assert link.unacknowledged <= 1
        await asyncio.wait_for(link.drain(), 5)
        assert link.unacknowledged == 0


@pytest.mark.asyncio
async def test_go_back_n_on_nak_when_host_frames_are_lost() -> None:
    async with (
        McuEmulator(seed=11, faults=Faults(drop=0.3, direction="to_mcu")) as emu,
        McuLink(emu.path) as link,
    ):
        link.configure(window=WINDOW)
        messages = schedule_messages(40)
        for message in messages:
            await link.send(message)
        await asyncio.wait_for(link.drain(), 15)
        stats = link.stats
        assert emu.outputs.config_crc == crc_of(messages)
        assert emu.line_stats[0].dropped > 0
    assert stats.naks > 0
    assert stats.retransmits > 0


@pytest.mark.asyncio
async def test_rto_doubles_while_the_mcu_is_silent_and_karn_skips_the_sample(
    emulator: McuEmulator,
) -> None:
    emulator.set_faults(silent=True)
    async with McuLink(emulator.path) as link:
        message = schedule_messages(1)
        await link.send(message[0])
        await emulator.wait_until(lambda: link.stats.rto_expiries >= 3, timeout_s=5)
        stats = link.stats
        assert stats.rto_ms == pytest.approx(100 * 2**stats.rto_expiries)
        assert stats.retransmits == stats.rto_expiries
        emulator.set_faults(silent=False)
        await asyncio.wait_for(link.drain(), 5)
        assert link.stats.srtt_ms is None  # the only ack was for a retransmitted frame
    assert emulator.outputs.config_crc == crc_of(message)


@pytest.mark.asyncio
async def test_cancelled_send_waiting_for_the_window_is_never_sent(
    emulator: McuEmulator,
) -> None:
    emulator.set_faults(silent=True)
    first, second = schedule_messages(2)
    async with McuLink(emulator.path) as link:
        await link.send(first)  # fills the window of 1
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await link.send(second)
        emulator.set_faults(silent=False)
        await asyncio.wait_for(link.drain(), 5)
        assert link.stats.messages_sent == 1
    assert emulator.outputs.config_crc == crc_of([first])


@pytest.mark.asyncio
async def test_host_restart_resyncs_on_the_mcus_nak(emulator: McuEmulator) -> None:
    before = schedule_messages(5)
    async with McuLink(emulator.path) as link:
        link.configure(window=WINDOW)
        for message in before:
            await link.send(message)
        await asyncio.wait_for(link.drain(), 5)
    assert emulator.twin.expected == 5
    resyncs: list[int] = []
    after = schedule_messages(3, start=100)
    async with McuLink(emulator.path, on_resync=lambda: resyncs.append(1)) as link:
        for message in after:  # the first goes out as seq 0 and draws NAK(5)
            await link.send(message)
        await asyncio.wait_for(link.drain(), 5)
        stats = link.stats
    assert resyncs == [1]
    assert stats.seq_resyncs == 1
    assert emulator.outputs.config_crc == crc_of(before + after)


@pytest.mark.asyncio
async def test_mcu_reset_is_a_resync_and_the_new_mcu_gets_the_frames(
    emulator: McuEmulator,
) -> None:
    resyncs: list[int] = []
    async with McuLink(emulator.path, on_resync=lambda: resyncs.append(1)) as link:
        link.configure(window=WINDOW)
        for message in schedule_messages(7):
            await link.send(message)
        await asyncio.wait_for(link.drain(), 5)
        emulator.reset()
        # The new MCU's boot push names seq 0, outside the host's range (7): a resync.
        await emulator.wait_until(lambda: resyncs, timeout_s=2)
        fresh = schedule_messages(4, start=50)
        for message in fresh:
            await link.send(message)
        await asyncio.wait_for(link.drain(), 5)
    assert resyncs == [1]
    assert emulator.outputs.config_crc == crc_of(fresh)


@pytest.mark.asyncio
async def test_partial_frame_is_dropped_after_rx_idle(emulator: McuEmulator) -> None:
    async with McuLink(emulator.path) as link:
        await link.send(schedule_messages(1)[0])
        await asyncio.wait_for(link.drain(), 5)
        emulator.set_faults(silent=True)  # nothing follows the cut frame
        emulator.reset(mid_frame=True)
        await emulator.wait_until(lambda: link.stats.idle_drops == 1, timeout_s=2)
        assert link.stats.discarded_bytes > 0
        emulator.set_faults(silent=False)
        later = schedule_messages(2, start=9)
        for message in later:
            await link.send(message)
        await asyncio.wait_for(link.drain(), 5)
    assert emulator.outputs.config_crc == crc_of(later)


@pytest.mark.asyncio
async def test_closed_link_fails_senders(emulator: McuEmulator) -> None:
    link = McuLink(emulator.path)
    link.open()
    await link.aclose()
    with pytest.raises(TransportError):
        await link.send(schedule_messages(1)[0])
    with pytest.raises(TransportError):
        McuLink("/dev/does-not-exist").open()


async def _faulty_run(seed: int, faults: Faults, count: int) -> None:
    async with McuEmulator(seed=seed, faults=faults) as emu, McuLink(emu.path) as link:
        link.configure(window=WINDOW)
        messages = schedule_messages(count, start=seed)
        await asyncio.gather(*(link.send(m) for m in messages))
        await asyncio.wait_for(link.drain(), 30)
        assert emu.outputs.config_crc == crc_of(messages)
        stats = link.stats
        to_mcu, to_host = emu.line_stats
        if to_mcu.dropped or to_mcu.corrupted:  # the MCU missed a frame: it was resent
            assert stats.retransmits > 0
        if to_host.corrupted or to_host.garbage_bytes:  # the host's decoder saw the damage
            assert stats.discards + stats.idle_drops > 0


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**16),
    drop=st.sampled_from([0.0, 0.1, 0.2]),
    corrupt=st.sampled_from([0.0, 0.05, 0.1]),
    garbage=st.sampled_from([0.0, 0.05, 0.1]),
    direction=st.sampled_from(DIRECTIONS),
)
def test_random_fault_schedules_deliver_exactly_once(
    seed: int, drop: float, corrupt: float, garbage: float, direction: Direction
) -> None:
    faults = Faults(drop=drop, corrupt=corrupt, garbage=garbage, direction=direction)
    asyncio.run(_faulty_run(seed, faults, 25))


def test_undecodable_and_stale_answers_are_counted() -> None:
    link = McuLink("/dev/null")  # never opened: only the decoding side is exercised
    seen: list[str] = []

    def observe(message: Message) -> bool:
        seen.append(message.name)
        return False  # not taken: matched to a request next

    channel = RequestChannel(
        link,
        timeout_s=1.0,
        answer_timeout_s=0.05,
        attempts=2,
        observe=observe,
        on_re_request=lambda: None,
    )
    channel.on_payload(DICTIONARY.encode("identify_response", offset=0, data=b"{"))
    assert link.stats.stale_answers == 1  # nobody asked for that offset
    channel.dictionary = DICTIONARY
    channel.on_payload(b"\x7f\x00")  # id 127 is no response of this dictionary
    channel.on_payload(DICTIONARY.encode("level_state", tag=9, level=5, source=0))
    stats = link.stats
    assert stats.bad_messages == 1
    assert stats.stale_answers == 2  # tag 9 is nobody's
    assert seen == ["level_state"]  # the owner saw it first
