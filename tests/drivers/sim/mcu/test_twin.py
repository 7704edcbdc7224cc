"""The Python twin of the pole MCU, driven the way a host would drive the real one."""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpole.drivers.mcu.codes import ErrorCode, EventKind, LevelSource
from smartpole.drivers.mcu.dictionary import DICTIONARY, DICTIONARY_BYTES
from smartpole.drivers.mcu.frame import MAX_PAYLOAD, FrameDecoder, encode_frame
from smartpole.drivers.mcu.msgproto import ArgType, Message
from smartpole.drivers.sim.mcu.twin import McuTwin
from smartpole.drivers.sim.mcu.twin_state import Clock, McuConfig, fallback_policy, schedule_level


class Host:
    """A minimal, synchronous host: numbered frames out, decoded MCU frames back."""

    def __init__(self, twin: McuTwin) -> None:
        self.twin = twin
        self.seq = 0
        self.decoder = FrameDecoder(from_mcu=True)
        self.acked: list[int] = []
        self.naks: list[int] = []

    def _read(self, tx: bytes) -> list[Message]:
        out = []
        for frame in self.decoder.feed(tx):
            (self.naks if frame.nak else self.acked).append(frame.seq)
            out += DICTIONARY.decode(frame.payload, from_mcu=True)
        return out

    def send(self, t: int, *messages: Message, seq: int | None = None) -> list[Message]:
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) % 16
        payload = b"".join(DICTIONARY.encode(m.name, **m.args) for m in messages)
        return self._read(self.twin.receive(encode_frame(seq, payload), t))

    def raw(self, t: int, payload: bytes) -> list[Message]:
        seq, self.seq = self.seq, (self.seq + 1) % 16
        return self._read(self.twin.receive(encode_frame(seq, payload), t))

    def tick(self, t: int) -> list[Message]:
        return self._read(self.twin.tick(t))

    def configure(self, t: int, *config: Message) -> int:
        crc = 0
        self.send(t, msg("config_reset", tag=1))
        for message in config:
            assert self.send(t, message) == []
            crc = zlib.crc32(DICTIONARY.encode(message.name, **message.args), crc)
        (state,) = self.send(t, msg("finalize_config", tag=2, crc=crc))
        assert state == msg("config_state", tag=2, is_config=1, crc=crc, boot_id=self.twin.boot_id)
        return crc


def msg(name: str, **args: int | bytes) -> Message:
    return Message(name, dict(args))


def error(tag: int, code: ErrorCode) -> Message:
    return msg("error", tag=tag, code=int(code))


@pytest.fixture
def host() -> Host:
    host = Host(McuTwin(0xC0FFEE))
    (boot,) = host.tick(0)
    assert boot.name == "event"
    assert boot.args["kind"] == EventKind.BOOT
    assert boot.args["id"] == 1
    return host


def test_boot_state() -> None:
    twin = McuTwin(42)
    out = twin.outputs
    assert (out.level, out.relays, out.source) == (100, 0xFF, LevelSource.FALLBACK_LEVEL)
    assert not (out.fallback)
    assert not (out.tripped)
    assert not (out.configured)
    assert out.config_crc == 0
    assert twin.expected == 0
    assert twin.last_event == 1


def test_boot_event_goes_out_with_the_first_answer() -> None:
    host = Host(McuTwin(7))
    answers = host.send(5, msg("get_config", tag=1))
    assert [m.name for m in answers] == ["event", "config_state"]
    assert host.acked == [0, 1]  # the push was sent before the frame was processed


def test_identify_serves_the_dictionary(host: Host) -> None:
    data, offset = b"", 0
    while True:
        (answer,) = host.send(1, msg("identify", offset=offset, count=48))
        chunk = answer.args["data"]
        assert isinstance(chunk, bytes)
        assert answer.args["offset"] == offset
        data, offset = data + chunk, offset + len(chunk)
        if len(chunk) < 48:
            break
    assert data == DICTIONARY_BYTES
    assert host.send(1, msg("identify", offset=0, count=49)) == [error(0, ErrorCode.BAD_ARGUMENT)]


def test_twin_serves_a_dictionary_it_cannot_parse() -> None:
    doc = json.loads(DICTIONARY_BYTES)
    doc["version"] = 2
    raw = json.dumps(doc).encode()
    host = Host(McuTwin(1, dictionary=raw))
    (answer,) = host.send(0, msg("identify", offset=0, count=48))[1:]
    assert answer.args["data"] == raw[:48]


def test_wrong_seq_is_naked_and_not_processed(host: Host) -> None:
    assert host.send(1, msg("config_reset", tag=1), seq=3) == []
    assert host.naks == [0]
    assert host.twin.stats.naks == 1
    host.send(2, msg("get_config", tag=2))  # seq 0
    assert host.acked[-1] == 1
    assert host.send(3, msg("get_config", tag=3), seq=0) == []  # a duplicate
    assert host.naks == [0, 1]


def test_every_answer_in_its_own_frame(host: Host) -> None:
    answers = host.send(
        1, msg("get_config", tag=1), msg("get_stats", tag=2), msg("get_inputs", tag=3)
    )
    assert [m.name for m in answers] == ["config_state", "stats", "inputs"]
    assert host.acked[-3:] == [1, 1, 1]
    assert host.send(2) == []
    assert host.acked[-1] == 2


def test_config_crc_and_finalize(host: Host) -> None:
    config = [
        msg("config_relay", channel=3, default_on=0, max_duration_ms=10_000),
        msg("config_fallback", heartbeat_ms=1000, level=40, lease_ms=5000),
    ]
    crc = host.configure(1, *config)
    assert host.twin.outputs.configured
    assert host.twin.outputs.config_crc == crc
    assert host.twin.active_config.relays[2].max_duration_ms == 10_000
    assert host.send(2, config[0]) == [error(0, ErrorCode.ALREADY_CONFIGURED)]
    assert host.send(3, msg("finalize_config", tag=9, crc=crc))[0].args["is_config"] == 1
    assert host.send(4, msg("finalize_config", tag=9, crc=crc + 1)) == [
        error(9, ErrorCode.CRC_MISMATCH)
    ]


def test_wrong_crc_stays_unconfigured(host: Host) -> None:
    host.send(1, msg("config_reset", tag=1))
    host.send(1, msg("config_alarms", tilt_cdeg=100, impact_mg=100))
    assert host.send(1, msg("finalize_config", tag=2, crc=0)) == [error(2, ErrorCode.CRC_MISMATCH)]
    assert not host.twin.outputs.configured
    assert host.send(1, msg("set_level", tag=3, level=5)) == [error(3, ErrorCode.NOT_CONFIGURED)]


def test_bad_config_argument_changes_nothing(host: Host) -> None:
    host.send(1, msg("config_reset", tag=1))
    bad = msg("config_fallback", heartbeat_ms=99, level=40, lease_ms=5000)
    assert host.send(1, bad) == [error(0, ErrorCode.BAD_ARGUMENT)]
    assert host.twin.outputs.config_crc == 0


def test_fallback_and_recovery(host: Host) -> None:
    host.configure(1, msg("config_fallback", heartbeat_ms=300, level=55, lease_ms=60_000))
    host.send(10, msg("heartbeat", tag=1, unix_time=0, utc_offset_min=0))
    host.send(20, msg("set_level", tag=2, level=5), msg("set_relay", tag=3, channel=1, on=0))
    assert host.tick(309) == []
    (entered,) = host.tick(310)
    assert entered.args["kind"] == EventKind.FALLBACK_ENTERED
    out = host.twin.outputs
    assert (out.fallback, out.level, out.relays, out.source) == (True, 55, 0xFF, 3)
    assert host.send(320, msg("set_level", tag=4, level=5)) == [error(4, ErrorCode.FALLBACK_ACTIVE)]
    left, status = host.send(330, msg("heartbeat", tag=5, unix_time=0, utc_offset_min=0))
    assert left.args["kind"] == EventKind.FALLBACK_LEFT
    assert status.args["flags"] == 0b0001
    assert host.send(340, msg("set_level", tag=6, level=5))[0].name == "level_state"


def test_leakage_trip_latch(host: Host) -> None:
    host.twin.inputs.leakage_ua = 30_000
    (trip,) = host.tick(1)
    assert (trip.args["kind"], trip.args["value"]) == (EventKind.LEAKAGE_TRIP, 30_000)
    assert host.twin.outputs.relays == 0
    assert host.twin.outputs.tripped
    assert host.send(2, msg("clear_trip", tag=1)) == [error(1, ErrorCode.TRIPPED)]
    host.twin.inputs.leakage_ua = 100
    cleared, status = host.send(3, msg("clear_trip", tag=2))
    assert cleared.args["kind"] == EventKind.TRIP_CLEARED
    assert status.args["relays"] == 0xFF
    assert status.args["flags"] == 0


def test_event_ring_keeps_the_last_16(host: Host) -> None:
    for t in range(1, 21):
        host.twin.inputs.door = t % 2
        assert len(host.tick(t)) == 1
    assert host.twin.last_event == 21
    assert host.twin.stats.events_lost == 5
    (oldest,) = host.send(30, msg("get_event", tag=1, after=0))
    assert oldest.args["id"] == 6
    (later,) = host.send(30, msg("get_event", tag=2, after=10))
    assert later.args["id"] == 11
    (none,) = host.send(30, msg("get_event", tag=3, after=21))
    assert none == msg("event", tag=3, id=0, kind=0, value=0, uptime_ms=0, unix_time=0)


def test_accel_peak_is_consumed_by_the_tick(host: Host) -> None:
    host.configure(1, msg("config_alarms", tilt_cdeg=0, impact_mg=100))
    host.twin.inputs.accel_peak_mg = 250
    (impact,) = host.tick(2)
    assert impact.args["kind"] == EventKind.IMPACT
    assert impact.args["value"] == 250
    assert host.twin.inputs.accel_peak_mg == 0
    assert host.tick(3) == []


def test_unknown_and_malformed_stop_the_frame(host: Host) -> None:
    stats = DICTIONARY.encode("get_stats", tag=1)
    answers = host.raw(1, stats + b"\x63" + stats)
    assert [m.name for m in answers] == ["stats", "error"]
    assert answers[1] == error(0, ErrorCode.UNKNOWN_COMMAND)
    assert host.raw(2, bytes.fromhex("0b01")) == [error(0, ErrorCode.MALFORMED)]
    assert host.twin.stats.bad_messages == 2


def test_schedule_and_policy() -> None:
    assert schedule_level({}, 0) is None
    schedule = {0: (360, 0), 3: (1320, 70), 5: (1080, 100), 6: (1080, 90)}
    assert schedule_level(schedule, 0) == 70  # before 06:00: yesterday's 22:00 step
    assert schedule_level(schedule, 360) == 0
    assert schedule_level(schedule, 1079) == 0
    assert schedule_level(schedule, 1080) == 90  # a tie: the higher index
    assert schedule_level(schedule, 1439) == 70
    config = McuConfig(fallback_level=30, schedule=schedule)
    clock = Clock()
    assert fallback_policy(config, clock, 1, 0) == (30, LevelSource.PHOTOCELL)
    assert fallback_policy(config, clock, 0, 0) == (0, LevelSource.PHOTOCELL)
    assert fallback_policy(config, clock, 2, 0) == (30, LevelSource.FALLBACK_LEVEL)
    clock.set(86_400 * 10 + 3600 * 6, -60, 0)  # 06:00 UTC is 05:00 at UTC-1
    assert fallback_policy(config, clock, 1, 0) == (70, LevelSource.SCHEDULE)
    assert fallback_policy(config, clock, 1, 3_600_000) == (0, LevelSource.SCHEDULE)


# --- properties --------------------------------------------------------------------------


def _script(seed: bytes) -> list[tuple[int, bytes]]:
    """Valid frames of assorted commands with time stamps, derived from ``seed``."""
    steps, t = [], 0
    names = sorted(DICTIONARY.commands)
    for i in range(0, len(seed) - 3, 4):
        fmt = DICTIONARY.commands[names[seed[i] % len(names)]]
        args: dict[str, int | bytes] = {}
        for n, (arg, kind) in enumerate(fmt.args):
            byte = seed[(i + 1 + n) % len(seed)]
            args[arg] = byte - 128 if kind is ArgType.I32 else byte % 110
        t += seed[i + 3] * 10
        steps.append((t, encode_frame((i // 4) % 16, DICTIONARY.encode(fmt.name, **args))))
    return steps


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=40), st.integers(0, 500))))
def test_arbitrary_bytes_never_crash_the_twin(steps: list[tuple[bool, bytes, int]]) -> None:
    twin = McuTwin(3)
    decoder = FrameDecoder(from_mcu=True)
    t = 0
    for tick, data, delay in steps:
        t += delay
        tx = twin.tick(t) if tick else twin.receive(data, t)
        for frame in decoder.feed(tx):
            assert len(frame.payload) <= MAX_PAYLOAD
            DICTIONARY.decode(frame.payload, from_mcu=True)
    assert decoder.discards == 0
    assert not decoder.has_partial


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=4, max_size=400), st.integers(0, 60_000), st.integers(0, 100_000))
def test_valid_commands_keep_the_outputs_sane(seed: bytes, leakage: int, accel: int) -> None:
    twin = McuTwin(9)
    decoder = FrameDecoder(from_mcu=True)
    for t, frame in _script(seed):
        twin.inputs.leakage_ua, twin.inputs.accel_peak_mg = leakage, accel
        for tx in (twin.receive(frame, t), twin.tick(t)):
            for reply in decoder.feed(tx):
                DICTIONARY.decode(reply.payload, from_mcu=True)
        out = twin.outputs
        assert 0 <= out.level <= 100
        assert 0 <= out.relays <= 0xFF
        assert out.source in set(LevelSource)


@given(st.binary(min_size=4, max_size=200), st.lists(st.integers(1, 30), max_size=20))
def test_deterministic_and_chunking_independent_for_valid_frames(
    seed: bytes, cuts: list[int]
) -> None:
    script = _script(seed)
    one, two = McuTwin(5), McuTwin(5)
    out_one, out_two = b"", b""
    for t, frame in script:
        out_one += one.receive(frame, t) + one.tick(t)
        # The same frame in pieces, all arriving at the same instant.
        pieces, rest = [], frame
        for cut in cuts:
            pieces.append(rest[:cut])
            rest = rest[cut:]
        for piece in [*pieces, rest]:
            out_two += two.receive(piece, t)
        out_two += two.tick(t)
    assert out_one == out_two
    assert one.outputs == two.outputs
    assert one.stats == two.stats


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.none() | st.integers(0, 15), st.binary(max_size=MAX_PAYLOAD)), max_size=30
    )
)
def test_every_valid_frame_is_answered(frames: list[tuple[int | None, bytes]]) -> None:
    """In sequence: at least one frame back naming the next seq; otherwise one NAK.

    A ``None`` seq means "the one the MCU expects", so most frames are processed.
    """
    twin = McuTwin(11)
    twin.tick(0)
    decoder = FrameDecoder(from_mcu=True)
    for t, (chosen, payload) in enumerate(frames, start=1):
        seq = twin.expected if chosen is None else chosen
        in_sequence = seq == twin.expected
        answers = decoder.feed(twin.receive(encode_frame(seq, payload), t))
        if in_sequence:
            assert answers
            assert all(not a.nak and a.seq == twin.expected for a in answers)
        else:
            assert [(a.nak, a.seq, a.payload) for a in answers] == [(True, twin.expected, b"")]
        for answer in answers:
            DICTIONARY.decode(answer.payload, from_mcu=True)
    stats = twin.stats
    assert stats.rx_frames == len(frames)
    assert stats.rx_errors == 0
