"""Pelco-D framing: known frames byte for byte, the incremental decoder, argument checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from helpers.paths import PROFILES
from smartpole.agent.buses.registry import load_profile
from smartpole.drivers.pelco_d import protocol
from smartpole.drivers.pelco_d.profile import PelcoDProfile
from smartpole.drivers.pelco_d.protocol import Command, decode, encode

byte = st.integers(0, 255)
commands = st.builds(Command, byte, byte, byte, byte, byte)
no_sync = st.binary(max_size=12).map(lambda b: b.replace(b"\xff", b"\x00"))


def drain(stream: bytes, chunks: list[int] | None = None) -> list[tuple[int, Command]]:
    """Feed ``stream`` to the decoder in chunks; return (offset in stream, command) pairs."""
    sizes = chunks or [len(stream)]
    buf = bytearray()
    start = 0  # offset of buf[0] in stream
    fed = 0
    out: list[tuple[int, Command]] = []
    for size in [*sizes, len(stream)]:  # the final entry feeds whatever is left
        buf += stream[fed : fed + size]
        fed = min(len(stream), fed + size)
        while buf:
            used, cmd = decode(buf)
            if used == 0:
                break
            assert 0 < used <= len(buf)
            if cmd is not None:
                out.append((start, cmd))
            del buf[:used]
            start += used
    return out


# ----- known frames -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "frame"),
    [
        (protocol.go_to_preset(1, 1), "FF 01 00 07 00 01 09"),
        (protocol.set_preset(1, 1), "FF 01 00 03 00 01 05"),
        (protocol.clear_preset(1, 1), "FF 01 00 05 00 01 07"),
        (protocol.stop(1), "FF 01 00 00 00 00 01"),
        (protocol.pan_tilt(1, 1.0, 0), "FF 01 00 02 3F 00 42"),  # pan right, full speed
        (protocol.pan_tilt(1, -1.0, 0), "FF 01 00 04 3F 00 44"),  # pan left
        (protocol.pan_tilt(1, 0, 1.0), "FF 01 00 08 00 3F 48"),  # tilt up
        (protocol.pan_tilt(1, 0, -1.0), "FF 01 00 10 00 3F 50"),  # tilt down
        (protocol.pan_tilt(1, 0, 0, zoom=1), "FF 01 00 20 00 00 21"),  # zoom tele
        (protocol.pan_tilt(1, 0, 0, zoom=-1), "FF 01 00 40 00 00 41"),  # zoom wide
        (protocol.pan_tilt(1, 1.0, 0, turbo=True), "FF 01 00 02 FF 00 02"),
        (protocol.pan_tilt(2, 0.5, -0.5), "FF 02 00 12 20 20 54"),  # right + down, 32/63
        (protocol.query_pan(1), "FF 01 00 51 00 00 52"),
        (protocol.query_tilt(1), "FF 01 00 53 00 00 54"),
        (protocol.set_pan(1, 9000), "FF 01 00 4B 23 28 97"),  # 90.00°
        (protocol.set_tilt(1, 4500), "FF 01 00 4D 11 94 F3"),  # 45.00°
        (protocol.go_to_preset(255, 255), "FF FF 00 07 00 FF 05"),  # sum 0x205
    ],
)
def test_known_frames(cmd: Command, frame: str) -> None:
    assert encode(cmd) == bytes.fromhex(frame)
    assert decode(bytes.fromhex(frame)) == (7, cmd)


def test_position_replies_parse() -> None:
    used, reply = decode(bytes.fromhex("FF 01 00 59 46 50 F0"))  # 0x4650 = 18000 = 180°
    assert used == 7
    assert reply is not None
    assert protocol.parse_position_reply(reply) == ("pan", 18000)
    used, reply = decode(bytes.fromhex("FF 01 00 5B 03 E8 47"))  # 1000 = 10.00°
    assert reply is not None
    assert protocol.parse_position_reply(reply) == ("tilt", 1000)
    assert encode(protocol.position_reply(1, "tilt", 1000)) == bytes.fromhex("FF01005B03E847")


@pytest.mark.parametrize(
    "cmd",
    [
        protocol.go_to_preset(1, 1),
        Command(1, 0, 0x59, 0x8C, 0xA0),  # 36000: one past a full turn
        Command(1, 0x01, 0x59, 0, 0),  # cmd1 must be 0
    ],
)
def test_parse_position_reply_rejects_other_frames(cmd: Command) -> None:
    with pytest.raises(ValueError, match="position"):
        protocol.parse_position_reply(cmd)


def test_kinds_name_what_a_frame_is() -> None:
    assert protocol.stop(3).kind == "stop"
    assert protocol.pan_tilt(3, 0.2, 0).kind == "move"
    assert protocol.go_to_preset(3, 4).kind == "go_to_preset"
    assert protocol.query_tilt(3).kind == "query_tilt"
    assert Command(3, 0, 0x45).kind == "other"


# ----- the decoder ------------------------------------------------------------------------


@given(commands)
def test_round_trip(cmd: Command) -> None:
    frame = encode(cmd)
    assert len(frame) == 7
    assert frame[0] == 0xFF
    assert decode(frame) == (7, cmd)
    for cut in range(7):
        assert decode(frame[:cut]) == (0, None)


@given(
    st.lists(st.tuples(no_sync, commands), max_size=8),
    no_sync,
    st.lists(st.integers(1, 9), max_size=40),
)
def test_chunked_stream_with_garbage_decodes_the_same_commands(
    parts: list[tuple[bytes, Command]], tail: bytes, chunks: list[int]
) -> None:
    stream = b"".join(junk + encode(cmd) for junk, cmd in parts) + tail
    decoded = [cmd for _, cmd in drain(stream, chunks)]
    assert decoded == [cmd for _, cmd in parts]
    assert drain(stream) == drain(stream, chunks)


def _check_honest(stream: bytes, decoded: list[tuple[int, Command]]) -> None:
    """Every command the decoder returned is exactly what the bytes at its offset say."""
    for offset, cmd in decoded:
        assert stream[offset : offset + 7] == encode(cmd)


def _check_found(frames_at: list[int], decoded: list[tuple[int, Command]]) -> None:
    """An intact frame is decoded unless a checksum-valid window overlapping it was
    taken first: resync drops one byte at a time and never skips a sync byte."""
    taken = {offset for offset, _ in decoded}
    for offset in frames_at:
        covered = any(o < offset < o + 7 for o in taken)
        assert offset in taken or covered, f"intact frame at {offset} was lost"


@given(st.lists(commands, min_size=1, max_size=5), st.data())
def test_one_corrupted_byte_is_never_silently_misread(
    cmds: list[Command], data: st.DataObject
) -> None:
    frames = [encode(c) for c in cmds]
    stream = bytearray(b"".join(frames))
    where = data.draw(st.integers(0, len(stream) - 1), label="where")
    value = data.draw(byte.filter(lambda v: v != stream[where]), label="value")
    stream[where] = value
    decoded = drain(bytes(stream))
    _check_honest(bytes(stream), decoded)
    hit = where // 7
    intact = [7 * i for i in range(len(cmds)) if i != hit]
    _check_found(intact, decoded)
    # The damaged frame itself can never come back valid: one changed byte always
    # changes the sum (a difference of 1..255 is never 0 mod 256) or removes the sync.
    assert 7 * hit not in {offset for offset, _ in decoded}


@given(st.lists(st.tuples(st.binary(max_size=10), commands), max_size=6), st.binary(max_size=9))
def test_any_noise_between_frames_is_handled_honestly(
    parts: list[tuple[bytes, Command]], tail: bytes
) -> None:
    stream = b""
    frames_at = []
    for junk, cmd in parts:
        stream += junk
        frames_at.append(len(stream))
        stream += encode(cmd)
    stream += tail
    decoded = drain(stream)
    _check_honest(stream, decoded)
    _check_found(frames_at, decoded)


def test_a_valid_window_inside_noise_decodes_to_what_it_says() -> None:
    """The decoder is not magic: noise that happens to checksum is a frame."""
    noise = bytes.fromhex("12 FF 05 00 07 00 02 0E 34")
    assert drain(noise) == [(1, Command(5, 0, 7, 0, 2))]


def test_bad_checksum_costs_exactly_one_byte() -> None:
    bad = bytes.fromhex("FF 01 00 07 00 01 0A")
    assert decode(bad) == (1, None)
    assert decode(bad[1:]) == (6, None)  # everything up to the next sync byte
    good = encode(protocol.stop(1))
    assert drain(bytes.fromhex("FF 12") + good) == [(2, protocol.stop(1))]


# ----- argument checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: protocol.stop(0), "address must be 1..255"),
        (lambda: protocol.stop(256), "address must be 1..255"),
        (lambda: protocol.go_to_preset(1, 0), "preset number must be 1..255"),
        (lambda: protocol.go_to_preset(1, 256), "preset number must be 1..255"),
        (lambda: protocol.set_preset(1, 0), "preset number must be 1..255"),
        (lambda: protocol.clear_preset(1, 300), "preset number must be 1..255"),
        (lambda: protocol.go_to_preset(0, 1), "address must be 1..255"),
        (lambda: protocol.pan_tilt(1, 1.5, 0), "pan speed must be a number in -1..1"),
        (lambda: protocol.pan_tilt(1, 0, -1.01), "tilt speed must be a number in -1..1"),
        (lambda: protocol.pan_tilt(1, float("nan"), 0), "pan speed"),
        (lambda: protocol.pan_tilt(1, 0, 0, zoom=2), "zoom must be"),
        (lambda: protocol.set_pan(1, 36000), "pan position must be 0..35999"),
        (lambda: protocol.set_tilt(1, -1), "tilt position must be 0..35999"),
        (lambda: protocol.query_pan(0), "address must be 1..255"),
        (lambda: Command(1, 0, 0x100), "cmd2 must be one byte"),
    ],
)
def test_invalid_arguments_raise(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@given(st.floats(-1, 1), st.floats(-1, 1))
def test_speeds_scale_and_only_zero_stops(pan: float, tilt: float) -> None:
    cmd = protocol.pan_tilt(7, pan, tilt)
    assert (cmd.data1 == 0) == (pan == 0)
    assert (cmd.data2 == 0) == (tilt == 0)
    assert 0 <= cmd.data1 <= 0x3F
    assert 0 <= cmd.data2 <= 0x3F
    assume(pan != 0)
    assert bool(cmd.cmd2 & protocol.PAN_RIGHT) == (pan > 0)
    assert bool(cmd.cmd2 & protocol.PAN_LEFT) == (pan < 0)


# ----- the profile ------------------------------------------------------------------------


def test_shipped_profile_loads() -> None:
    profile = load_profile(PROFILES / "pelco-d-ptz.yaml")
    assert isinstance(profile, PelcoDProfile)
    assert 95 in profile.reserved_presets
    assert profile.cross_check() == []
    assert profile.preset_problem(95) is not None
    assert profile.preset_problem(1) is None


def test_profile_cross_check_locates_problems(tmp_path: Path) -> None:
    base = {"model": "m", "manufacturer": "x", "protocol": "pelco-d"}
    twice = PelcoDProfile.model_validate({**base, "reserved_presets": [95, 33, 95]})
    assert twice.cross_check() == [(("reserved_presets", 2), "preset 95 is listed twice")]
    none_left = PelcoDProfile.model_validate({**base, "max_preset": 2, "reserved_presets": [1, 2]})
    assert none_left.cross_check() == [(("reserved_presets",), "every preset 1..2 is reserved")]
    assert none_left.preset_problem(3) == "preset 3 is outside 1..2 for m"
