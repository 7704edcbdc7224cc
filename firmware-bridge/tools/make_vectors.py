"""Regenerate drivers/mcu/dictionary.py and the shared vectors in firmware-bridge/vectors/.

Run with the project's interpreter: ``.venv/bin/python firmware-bridge/tools/make_vectors.py``
(``--check`` only reports stale files). The output is deterministic (no clock, no
randomness): a rerun on an unchanged tree changes nothing, and tests/drivers/mcu/test_vectors.py
fails when a committed file differs from what this script produces.

The vectors come from the Python codec and twin, so on their own they would only prove
that Python agrees with itself. What ties them to PROTOCOL.md are the literal
expectations below (``_literal``): frames, messages and CRCs worked out by hand from the
spec, and checked against external oracles (``binascii.crc_hqx`` is CRC-16/CCITT with a
given initial value, ``zlib.crc32`` is CRC-32/ISO-HDLC).
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import sys
import zlib
from pathlib import Path
from typing import Any

from smartpole.drivers.mcu.dictionary import DICTIONARY, DICTIONARY_BYTES
from smartpole.drivers.mcu.frame import FrameDecoder, crc16_ccitt, encode_frame
from smartpole.drivers.mcu.msgproto import MalformedMessageError, Message, UnknownMessageError
from smartpole.drivers.sim.mcu.twin_session import INPUT_FIELDS, SessionRecorder

REPO = Path(__file__).resolve().parents[2]
BRIDGE = REPO / "firmware-bridge"
DICTIONARY_JSON = BRIDGE / "dictionary.json"
DICTIONARY_MODULE = REPO / "drivers" / "mcu" / "dictionary.py"
VECTORS = BRIDGE / "vectors"

_MODULE_HEAD = '''"""The canonical dictionary of protocol version 1, the bytes the MCU serves.

Generated from firmware-bridge/dictionary.json by firmware-bridge/tools/make_vectors.py; do
not edit. It is a module rather than a data file because the installed package cannot
read firmware-bridge/ at run time; tests/drivers/mcu/test_vectors.py checks the two are equal.
"""

from __future__ import annotations

from typing import Final

from smartpole.drivers.mcu.msgproto import Dictionary

DICTIONARY_BYTES: Final = (
'''

_MODULE_TAIL = """)

DICTIONARY: Final = Dictionary.parse(DICTIONARY_BYTES)
"""


def render_dictionary_module(raw: bytes) -> str:
    """The source of drivers/mcu/dictionary.py holding ``raw`` as a bytes literal."""
    lines = [f"    {raw[i : i + 72]!r}\n" for i in range(0, len(raw), 72)]
    return _MODULE_HEAD + "".join(lines) + _MODULE_TAIL


def _literal(what: str, actual: bytes | int, expected: str | int) -> None:
    """Stop the generator when the code disagrees with a hand-worked expectation."""
    if isinstance(actual, bytes):
        assert isinstance(expected, str)
        ok = actual == bytes.fromhex(expected)
        shown = actual.hex(" ")
    else:
        ok = actual == expected
        shown = hex(actual)
    if not ok:
        raise SystemExit(f"hand-checked vector {what!r} disagrees: code gives {shown}")


def _dump(value: Any) -> str:
    return json.dumps(value, indent=1) + "\n"


def _crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE one bit at a time, straight from the definition."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


# --- crc.json ----------------------------------------------------------------------------


def crc_vectors() -> list[dict[str, Any]]:
    """CRC-16/CCITT-FALSE and CRC-32/ISO-HDLC of assorted inputs."""
    _literal("crc16 check value", crc16_ccitt(b"123456789"), 0x29B1)
    _literal("crc32 check value", zlib.crc32(b"123456789"), 0xCBF43926)
    _literal("crc16 of nothing", crc16_ccitt(b""), 0xFFFF)
    inputs = [
        b"",
        b"123456789",
        b"\x00",
        b"\xff",
        b"\x7e",
        b"\x05\x11",
        b"\x05\x31",
        b"\x00" * 32,
        b"\xff" * 32,
        bytes(range(256)),
        DICTIONARY.encode("config_relay", channel=1, default_on=0, max_duration_ms=1000),
        DICTIONARY_BYTES,
    ]
    vectors = []
    for data in inputs:
        crc16 = crc16_ccitt(data)
        for oracle in (_crc16_bitwise(data), binascii.crc_hqx(data, 0xFFFF)):
            _literal(f"crc16 of {data[:8].hex()}", crc16, oracle)
        vectors.append({"data": data.hex(), "crc16": crc16, "crc32": zlib.crc32(data)})
    return vectors


# --- frames.json -------------------------------------------------------------------------


def _encode_vector(
    name: str, direction: str, seq: int, payload: bytes, nak: bool = False
) -> dict[str, Any]:
    frame = encode_frame(seq, payload, nak=nak)
    return {
        "name": name,
        "direction": direction,
        "seq": seq,
        "nak": nak,
        "payload": payload.hex(),
        "frame": frame.hex(),
    }


def _decode_stream(stream: bytes, direction: str, chunks: list[bytes]) -> dict[str, Any]:
    decoder = FrameDecoder(from_mcu=direction == "mcu")
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    return {
        "payloads": [frame.payload.hex() for frame in frames],
        "seqs": [frame.seq for frame in frames],
        "naks": [frame.nak for frame in frames],
        "discarded": decoder.discarded_bytes,
        "discards": decoder.discards,
        "remainder": len(decoder.pending),
    }


def _stream_vector(name: str, direction: str, stream: bytes) -> dict[str, Any]:
    whole = _decode_stream(stream, direction, [stream])
    bytewise = _decode_stream(stream, direction, [stream[i : i + 1] for i in range(len(stream))])
    return {"name": name, "direction": direction, "stream": stream.hex(), **whole,
            "bytewise": bytewise}  # fmt: skip


def frame_vectors() -> dict[str, Any]:
    """Frames built from fields, and streams cut into frames (whole and byte by byte)."""
    ack = encode_frame(1, b"")
    _literal("empty ack seq 1", ack, "05 11 e0 ea 7e")
    _literal("nak naming 1", encode_frame(1, b"", nak=True), "05 31 c4 88 7e")
    boot = DICTIONARY.encode("event", tag=0, id=1, kind=1, value=0, uptime_ms=0, unix_time=0)
    _literal("boot event push", encode_frame(0, boot), "0c 10 25 00 01 01 00 00 00 5b 62 7e")
    get_stats = DICTIONARY.encode("get_stats", tag=1)
    crc = binascii.crc_hqx(b"\x07\x10\x10\x01", 0xFFFF)
    _literal("get_stats frame", encode_frame(0, get_stats), f"07 10 10 01 {crc:04x} 7e")
    sync_payload = bytes([0x7E, 0x10, 0x7E])
    max_payload = bytes(range(0x20, 0x20 + 59))
    encode = [
        _encode_vector("empty ack seq 1", "mcu", 1, b""),
        _encode_vector("nak naming 1", "mcu", 1, b"", nak=True),
        _encode_vector("nak naming 15", "mcu", 15, b"", nak=True),
        _encode_vector("boot event push", "mcu", 0, boot),
        _encode_vector("get_stats seq 0", "host", 0, get_stats),
        _encode_vector("empty host frame seq 15", "host", 15, b""),
        _encode_vector("payload containing 0x7e", "host", 7, sync_payload),
        _encode_vector("max payload host", "host", 3, max_payload),
        _encode_vector("max payload mcu", "mcu", 12, max_payload),
        _encode_vector("identify", "host", 0, DICTIONARY.encode("identify", offset=0, count=48)),
        _encode_vector(
            "heartbeat",
            "host",
            9,
            DICTIONARY.encode("heartbeat", tag=7, unix_time=1_700_000_000, utc_offset_min=480),
        ),
    ]
    a = encode_frame(0, get_stats)
    b = encode_frame(1, DICTIONARY.encode("get_config", tag=2))
    c = encode_frame(2, b"")
    big = encode_frame(5, max_payload)
    bad_crc = a[:-3] + bytes([a[-3] ^ 0x01]) + a[-2:]
    mcu_a, mcu_nak = encode_frame(4, boot), encode_frame(5, b"", nak=True)
    streams = [
        _stream_vector("three clean frames", "host", a + b + c),
        _stream_vector("empty stream", "host", b""),
        _stream_vector("garbage before the first frame", "host", b"\x01\x02\x03" + a + b),
        _stream_vector("garbage between frames", "host", a + b"\x99\x98" + b + c),
        _stream_vector("garbage ending in sync", "host", a + b"\x01\x02\x7e" + b),
        _stream_vector("stray sync bytes", "host", b"\x7e" + a + b"\x7e\x7e" + b),
        _stream_vector("bad crc", "host", bad_crc + b + c),
        _stream_vector("LEN above 64", "host", b"\x41" + a[1:] + b),
        _stream_vector("LEN below 5", "host", b"\x04" + a[1:] + b),
        _stream_vector("LEN one too long", "host", bytes([a[0] + 1]) + a[1:] + b + c),
        _stream_vector("LEN one too short", "host", bytes([a[0] - 1]) + a[1:] + b),
        _stream_vector("SEQ without bit 4", "host", a[:1] + b"\x00" + a[2:] + b),
        _stream_vector("SEQ with bit 7", "host", a[:1] + b"\x90" + a[2:] + b),
        _stream_vector("NAK bit in a host frame", "host", mcu_nak + b),
        _stream_vector("NAK frames from the mcu", "mcu", mcu_a + mcu_nak + ack),
        _stream_vector("truncated frame then good ones", "host", a[:-3] + b + c),
        _stream_vector("incomplete frame at the end", "host", a + b[:4]),
        _stream_vector("max-size frame", "host", big + a),
        _stream_vector("only garbage, no sync", "host", b"\x00\x01\x02\xff"),
        _stream_vector(
            "garbage then a frame with 0x7e inside",
            "host",
            b"\x01" + encode_frame(3, sync_payload) + b + c,
        ),
    ]
    return {"encode": encode, "streams": streams}


# --- messages.json -----------------------------------------------------------------------

_U32 = 0xFFFFFFFF
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
_VALID: list[tuple[str, dict[str, int | bytes]]] = [
    ("identify", {"offset": 0, "count": 48}),
    ("identify", {"offset": 128, "count": 1}),
    ("identify", {"offset": _U32, "count": 255}),
    ("get_config", {"tag": 0}),
    ("get_config", {"tag": 255}),
    ("config_reset", {"tag": 127}),
    ("config_relay", {"channel": 1, "default_on": 0, "max_duration_ms": 1000}),
    ("config_relay", {"channel": 8, "default_on": 1, "max_duration_ms": 86_400_000}),
    ("config_fallback", {"heartbeat_ms": 127, "level": 100, "lease_ms": 128}),
    ("config_schedule", {"index": 7, "minute": 1439, "level": 50}),
    ("config_schedule", {"index": 0, "minute": 65535, "level": 0}),
    ("config_leakage", {"trip_ua": 30000, "relay_mask": 255}),
    ("config_alarms", {"tilt_cdeg": 128, "impact_mg": _U32}),
    ("finalize_config", {"tag": 9, "crc": 0xCBF43926}),
    ("heartbeat", {"tag": 1, "unix_time": 0, "utc_offset_min": -1}),
    ("heartbeat", {"tag": 2, "unix_time": 1_700_000_000, "utc_offset_min": -60}),
    ("heartbeat", {"tag": 3, "unix_time": _U32, "utc_offset_min": _I32_MIN}),
    ("heartbeat", {"tag": 4, "unix_time": 127, "utc_offset_min": _I32_MAX}),
    ("heartbeat", {"tag": 5, "unix_time": 128, "utc_offset_min": 64}),
    ("set_relay", {"tag": 1, "channel": 2, "on": 1}),
    ("set_level", {"tag": 200, "level": 100}),
    ("get_inputs", {"tag": 13}),
    ("get_event", {"tag": 14, "after": _U32}),
    ("clear_trip", {"tag": 15}),
    ("get_stats", {"tag": 16}),
    ("identify_response", {"offset": 0, "data": b""}),
    ("identify_response", {"offset": 1296, "data": DICTIONARY_BYTES[1296:1344]}),
    ("config_state", {"tag": 1, "is_config": 1, "crc": _U32, "boot_id": 0x12345678}),
    (
        "status",
        {
            "tag": 0,
            "flags": 15,
            "config_crc": 0,
            "boot_id": _U32,
            "uptime_ms": 128,
            "last_event": 16383,
            "level": 100,
            "relays": 255,
        },
    ),
    ("relay_state", {"tag": 4, "relays": 0xA5, "tripped": 1}),
    ("level_state", {"tag": 5, "level": 0, "source": 3}),
    (
        "inputs",
        {
            "tag": 6,
            "door": 1,
            "water": 0,
            "photocell": 2,
            "tilt_x": -500,
            "tilt_y": 64,
            "leakage_ua": 30000,
            "temp_cdeg": -1234,
            "supply_mv": 24000,
            "uptime_ms": 16384,
        },
    ),
    ("event", {"tag": 0, "id": 1, "kind": 1, "value": 0, "uptime_ms": 0, "unix_time": 0}),
    (
        "event",
        {
            "tag": 7,
            "id": _U32,
            "kind": 7,
            "value": _I32_MIN,
            "uptime_ms": _U32,
            "unix_time": 1_700_000_000,
        },
    ),
    (
        "stats",
        {
            "tag": 8,
            "rx_frames": 1,
            "rx_errors": 2,
            "naks": 3,
            "bad_messages": 4,
            "events_lost": 2_097_152,
        },
    ),
    ("error", {"tag": 0, "code": 6}),
]

_INVALID: list[tuple[str, str, str, str, int]] = [
    # (why, direction, bytes, error kind, messages decoded before the error)
    ("unknown id", "host", "63", "unknown", 0),
    ("response id sent to the mcu", "host", "2100", "unknown", 0),
    ("command id sent to the host", "mcu", "0a0100", "unknown", 0),
    ("largest id, unknown", "host", "ffffffff0f", "unknown", 0),
    ("good message then unknown id", "host", "100163", "unknown", 1),
    ("non-canonical id (80 00)", "host", "8000", "malformed", 0),
    ("non-canonical LEB128 (81 00)", "host", "0b81000201", "malformed", 0),
    ("6-byte LEB128", "host", "0e018080808080 00".replace(" ", ""), "malformed", 0),
    ("5-byte LEB128 above 32 bits", "host", "0e01ffffffff10", "malformed", 0),
    ("%c above 255", "host", "0b80020201", "malformed", 0),
    ("%hu above 65535", "host", "060080800400", "malformed", 0),
    ("truncated argument", "host", "0b0102", "malformed", 0),
    ("truncated LEB128", "host", "0b010281", "malformed", 0),
    ("truncated id", "host", "80", "malformed", 0),
    ("%*s longer than the payload", "mcu", "0100057b7d", "malformed", 0),
    ("good message then truncated", "host", "02010b01", "malformed", 1),
]


def _json_args(args: dict[str, int | bytes]) -> dict[str, int | str]:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in args.items()}


def message_vectors() -> dict[str, Any]:
    """Every command and response with boundary values, and payloads a decoder refuses."""
    hand = {
        "set_relay tag=1 channel=2 on=1": ("set_relay", {"tag": 1, "channel": 2, "on": 1},
                                           "0b 01 02 01"),
        "heartbeat unix_time=0 utc_offset_min=-1": (
            "heartbeat", {"tag": 1, "unix_time": 0, "utc_offset_min": -1}, "0a 01 00 01"),
        "config_alarms 128 and 2^32-1": (
            "config_alarms", {"tilt_cdeg": 128, "impact_mg": _U32}, "08 80 01 ff ff ff ff 0f"),
        "heartbeat utc_offset_min=-2^31": (
            "heartbeat", {"tag": 3, "unix_time": _U32, "utc_offset_min": _I32_MIN},
            "0a 03 ff ff ff ff 0f ff ff ff ff 0f"),
        "identify 0 48": ("identify", {"offset": 0, "count": 48}, "00 00 30"),
        "identify_response empty": ("identify_response", {"offset": 0, "data": b""}, "01 00 00"),
        "error unknown_command": ("error", {"tag": 0, "code": 6}, "27 00 06"),
        "config_relay 1 0 1000": (
            "config_relay", {"channel": 1, "default_on": 0, "max_duration_ms": 1000},
            "04 01 00 e8 07"),
    }  # fmt: skip
    for what, (name, args, expected) in hand.items():
        _literal(what, DICTIONARY.encode(name, **args), expected)
    names = set(DICTIONARY.commands) | set(DICTIONARY.responses)
    missing = names - {name for name, _ in _VALID}
    assert not missing, f"messages without a vector: {missing}"
    valid = []
    for name, args in _VALID:
        encoded = DICTIONARY.encode(name, **args)
        from_mcu = name in DICTIONARY.responses
        assert DICTIONARY.decode(encoded, from_mcu=from_mcu) == [Message(name, dict(args))]
        direction = "mcu" if from_mcu else "host"
        valid.append({"name": name, "direction": direction, "args": _json_args(args),
                      "bytes": encoded.hex()})  # fmt: skip
    invalid = []
    for why, direction, hexed, kind, before in _INVALID:
        messages, error = DICTIONARY.decode_partial(
            bytes.fromhex(hexed), from_mcu=direction == "mcu"
        )
        expected_type = UnknownMessageError if kind == "unknown" else MalformedMessageError
        assert isinstance(error, expected_type), (why, error)
        assert len(messages) == before, (why, messages)
        invalid.append({"name": why, "direction": direction, "bytes": hexed, "error": kind,
                        "decoded": before})  # fmt: skip
    return {"valid": valid, "invalid": invalid}


# --- sessions.json -----------------------------------------------------------------------

Msg = tuple[str, dict[str, int | bytes]]


def m(name: str, **args: int | bytes) -> Msg:
    """A message by name, for ``SessionRecorder.send``."""
    return name, args


def _start(name: str, boot_id: int, **inputs: int) -> SessionRecorder:
    """A session whose inputs are all set at t=0 and whose boot push is collected."""
    rec = SessionRecorder(name, boot_id)
    rec.inputs(0, **{**dict.fromkeys(INPUT_FIELDS, 0), "photocell": 2, "temp_cdeg": 2150,
                     "supply_mv": 24000, **inputs})  # fmt: skip
    boot = rec.tick(0)
    _literal("boot event push", boot, "0c 10 25 00 01 01 00 00 00 5b 62 7e")
    return rec


def _configure(rec: SessionRecorder, t: int, *config: Msg, tag: int = 100) -> int:
    """config_reset, the config_* messages (one frame each) and a matching finalize."""
    rec.send(t, m("config_reset", tag=tag))
    crc = 0
    for message in config:
        rec.send(t, message)
        crc = zlib.crc32(DICTIONARY.encode(message[0], **message[1]), crc)
    rec.send(t, m("finalize_config", tag=tag + 1, crc=crc))
    return crc


def _session_identify() -> SessionRecorder:
    rec = _start("identify the whole dictionary", 0x0000BEEF)
    data, offset, t = b"", 0, 1
    while True:
        tx = rec.send(t, m("identify", offset=offset, count=48))
        chunk = DICTIONARY.decode(FrameDecoder(from_mcu=True).feed(tx)[0].payload, from_mcu=True)
        piece = chunk[0].args["data"]
        assert isinstance(piece, bytes)
        data, offset, t = data + piece, offset + len(piece), t + 1
        if len(piece) < 48:
            break
    assert data == DICTIONARY_BYTES
    rec.send(t, m("identify", offset=offset, count=48))  # past the end: no bytes
    rec.send(t, m("identify", offset=0, count=0))  # count 0: bad_argument, tag 0
    rec.send(t, m("identify", offset=0, count=49))
    rec.send(t, m("identify", offset=5, count=1), m("get_config", tag=1))
    rec.expect()
    return rec


def _session_config() -> SessionRecorder:
    rec = _start("config, finalize and crc", 0xA5A5A5A5)
    rec.send(1, m("get_config", tag=1))
    rec.send(2, m("config_reset", tag=2))
    config = [
        m("config_relay", channel=1, default_on=0, max_duration_ms=1000),
        m("config_relay", channel=2, default_on=1, max_duration_ms=0),
        m("config_fallback", heartbeat_ms=500, level=70, lease_ms=2000),
        m("config_schedule", index=0, minute=1080, level=80),
        m("config_schedule", index=1, minute=360, level=0),
        m("config_leakage", trip_ua=20000, relay_mask=3),
        m("config_alarms", tilt_cdeg=400, impact_mg=2000),
    ]
    rec.send(3, *config[:2])
    rec.send(4, config[2])
    rec.send(5, m("config_fallback", heartbeat_ms=99, level=70, lease_ms=2000))  # bad_argument
    rec.send(6, m("config_schedule", index=8, minute=0, level=0))  # bad_argument
    rec.send(7, *config[3:])
    encoded = b"".join(DICTIONARY.encode(name, **args) for name, args in config)
    _literal("config messages", encoded, "04 01 00 e8 07  04 02 01 00  05 f4 03 46 d0 0f"
             "  06 00 b8 08 50  06 01 e8 02 00  07 a0 9c 01 03  08 90 03 d0 0f")  # fmt: skip
    crc = zlib.crc32(encoded)
    _literal("config crc", crc, 0xE29749F2)
    rec.send(8, m("finalize_config", tag=3, crc=crc ^ 1))  # crc_mismatch
    rec.send(9, m("get_config", tag=4))
    rec.expect()
    rec.send(10, m("finalize_config", tag=5, crc=crc))
    rec.expect()
    rec.send(11, m("finalize_config", tag=6, crc=crc))  # idempotent
    rec.send(12, m("config_relay", channel=3, default_on=0, max_duration_ms=0))
    rec.send(13, m("finalize_config", tag=7, crc=0))  # mismatch while configured
    rec.send(14, m("heartbeat", tag=8, unix_time=0, utc_offset_min=0))
    rec.send(15, m("config_reset", tag=9), m("get_config", tag=10))
    rec.expect()
    rec.send(16, m("finalize_config", tag=11, crc=0))  # the empty configuration
    rec.expect()
    return rec


def _session_sequence() -> SessionRecorder:
    rec = _start("sequence numbers, NAK and duplicates", 7)
    rec.send(1, m("get_stats", tag=1))
    nak = rec.rx(2, rec.frame(DICTIONARY.encode("get_stats", tag=2), seq=2))
    _literal("nak naming 1", nak, "05 31 c4 88 7e")
    rec.send(3, m("get_stats", tag=3), m("get_config", tag=4))  # seq 1: two answers
    rec.rx(4, rec.frame(DICTIONARY.encode("get_stats", tag=3), seq=1))  # duplicate: NAK 2
    nak_bit = encode_frame(2, DICTIONARY.encode("get_stats", tag=5), nak=True)
    rec.rx(5, nak_bit)  # invalid host frame: discarded, no answer
    ack = rec.rx(6, rec.frame())  # seq 2, empty: a bare acknowledgement naming 3
    crc = binascii.crc_hqx(b"\x05\x13", 0xFFFF)
    _literal("bare ack naming 3", ack, f"05 13 {crc:04x} 7e")
    for t in range(7, 7 + 16):  # wrap the sequence number round
        rec.send(t, m("get_config", tag=t))
    rec.send(30, m("get_stats", tag=30))
    rec.expect()
    return rec


def _hb(tag: int) -> Msg:
    """A heartbeat that leaves the clock unknown."""
    return m("heartbeat", tag=tag, unix_time=0, utc_offset_min=0)


def _session_fallback() -> SessionRecorder:
    rec = _start("heartbeat lapse, fallback and back", 0x1000)
    _configure(
        rec, 10,
        m("config_relay", channel=1, default_on=0, max_duration_ms=0),
        m("config_fallback", heartbeat_ms=500, level=60, lease_ms=3000),
    )  # fmt: skip
    rec.send(100, _hb(1))
    rec.send(150, m("set_relay", tag=2, channel=1, on=1), m("set_level", tag=3, level=30))
    rec.expect()
    rec.ticks(200, 400, 100)
    rec.send(400, _hb(4))
    rec.ticks(400, 900, 100)
    rec.expect()  # 499 ms since the heartbeat: still alive
    rec.tick(900)  # 500 ms: fallback_entered
    rec.expect()
    rec.send(950, m("set_relay", tag=5, channel=1, on=1), m("set_level", tag=6, level=10))
    rec.send(960, m("get_config", tag=7))
    rec.ticks(1000, 1200, 100)
    rec.send(1200, _hb(8))  # fallback_left, then status
    rec.expect()
    rec.tick(1300)
    rec.send(1300, m("set_relay", tag=9, channel=1, on=1), m("set_level", tag=10, level=20))
    rec.expect()
    return rec


def _session_leases() -> SessionRecorder:
    rec = _start("relay and level leases", 0x2000)
    _configure(
        rec, 10,
        m("config_relay", channel=2, default_on=0, max_duration_ms=1000),
        m("config_relay", channel=3, default_on=0, max_duration_ms=0),
        m("config_fallback", heartbeat_ms=5000, level=50, lease_ms=2000),
    )  # fmt: skip
    rec.send(50, _hb(1))
    rec.send(100, m("set_relay", tag=2, channel=2, on=1), m("set_relay", tag=3, channel=3, on=1),
             m("set_level", tag=4, level=20))  # fmt: skip
    rec.expect()
    rec.ticks(1000, 1110, 10)  # relay 2's lease ends at 1100
    rec.expect()
    rec.send(1200, m("set_relay", tag=5, channel=2, on=1))
    rec.send(1500, m("set_relay", tag=6, channel=2, on=1))  # renewed: ends at 2500
    rec.send(2000, _hb(7))
    rec.ticks(2000, 2110, 50)  # the level's lease ends at 2100
    rec.expect()
    rec.ticks(2400, 2600, 100)
    rec.expect()
    rec.ticks(3000, 7100, 1000)  # relay 3 holds until the heartbeat lapses at 7000
    rec.expect()
    rec.send(7100, m("get_event", tag=8, after=0), m("get_stats", tag=9))
    return rec


def _session_trip() -> SessionRecorder:
    rec = _start("leakage trip and clear_trip", 0x3000)
    rec.inputs(1, leakage_ua=30000)  # boot default: 30 000 µA on all relays
    rec.tick(1)
    rec.expect()
    rec.send(2, m("clear_trip", tag=1))  # still above: tripped
    rec.inputs(3, leakage_ua=29999)
    rec.send(3, m("clear_trip", tag=2))
    rec.expect()
    rec.inputs(4, leakage_ua=0)
    _configure(
        rec, 10,
        m("config_relay", channel=2, default_on=0, max_duration_ms=0),
        m("config_leakage", trip_ua=10000, relay_mask=0x05),
        m("config_fallback", heartbeat_ms=60000, level=100, lease_ms=60000),
    )  # fmt: skip
    rec.send(20, _hb(3), m("set_relay", tag=4, channel=2, on=1))
    rec.inputs(30, leakage_ua=12000)
    rec.tick(30)
    rec.expect()
    rec.send(40, m("set_relay", tag=5, channel=1, on=1), m("set_relay", tag=6, channel=2, on=0))
    rec.send(50, m("get_inputs", tag=7), m("clear_trip", tag=8))
    rec.inputs(60, leakage_ua=9999)
    rec.tick(60)
    rec.send(70, m("clear_trip", tag=9))
    rec.expect()
    rec.send(80, m("clear_trip", tag=10))  # not tripped: just status
    rec.tick(90)
    rec.expect()
    return rec


def _session_events() -> SessionRecorder:
    rec = _start("door, water, tilt and impact events; the ring", 0x4000)
    rec.inputs(1, door=1)
    rec.tick(1)
    rec.inputs(2, tilt_x=500)  # boot default tilt limit: 500
    rec.tick(2)
    _configure(rec, 10, m("config_alarms", tilt_cdeg=400, impact_mg=1500))
    rec.inputs(20, door=0, water=1)
    rec.tick(20)
    rec.inputs(30, water=0, tilt_x=300)  # below the limit, above half: stays disarmed
    rec.tick(30)
    rec.inputs(40, tilt_x=450)
    rec.tick(40)
    rec.inputs(50, tilt_x=199)  # below half: re-armed
    rec.tick(50)
    rec.inputs(60, tilt_x=0, tilt_y=-600, accel_peak_mg=1499)
    rec.tick(60)
    rec.inputs(70, accel_peak_mg=1500)
    rec.tick(70)
    rec.tick(80)  # the peak was consumed
    rec.inputs(90, door=1, water=1, tilt_y=0, accel_peak_mg=3000)
    rec.tick(90)  # door, water and impact in one tick, in that order
    rec.send(100, m("get_event", tag=1, after=0), m("get_event", tag=2, after=3))
    rec.send(101, m("get_event", tag=3, after=rec.twin.last_event))
    rec.send(102, m("heartbeat", tag=4, unix_time=1_700_000_000, utc_offset_min=0))
    for t in range(110, 200, 10):  # overflow the 16-event ring
        rec.inputs(t, door=int(t % 20 == 0))
        rec.tick(t)
    rec.send(200, m("get_event", tag=5, after=0), m("get_event", tag=6, after=2))
    rec.send(201, m("get_stats", tag=7))
    rec.expect()
    return rec


def _session_errors() -> SessionRecorder:
    rec = _start("errors: unconfigured, unknown, malformed, bad arguments", 0x5000)
    rec.send(1, m("set_relay", tag=1, channel=1, on=0), m("set_level", tag=2, level=0))
    rec.rx(2, rec.frame(bytes.fromhex("63")))  # unknown id
    get_stats = DICTIONARY.encode("get_stats", tag=3)
    get_config = DICTIONARY.encode("get_config", tag=4)
    rec.rx(3, rec.frame(get_stats, bytes.fromhex("63"), get_config))  # stops at the unknown
    rec.rx(4, rec.frame(get_config, bytes.fromhex("0b01")))  # truncated set_relay
    rec.rx(5, rec.frame(bytes.fromhex("0b80020101")))  # tag 256
    rec.rx(6, rec.frame(bytes.fromhex("0b81000101")))  # non-canonical LEB128
    rec.rx(7, rec.frame(bytes.fromhex("2101")))  # a response id
    rec.send(8, m("finalize_config", tag=5, crc=0))  # fresh boot: the empty configuration
    rec.send(9, m("set_relay", tag=6, channel=9, on=1), m("set_relay", tag=7, channel=0, on=1))
    rec.send(10, m("set_level", tag=8, level=101), m("set_relay", tag=9, channel=8, on=0),
             m("set_level", tag=10, level=0))  # fmt: skip
    rec.send(11, m("config_alarms", tilt_cdeg=0, impact_mg=0))  # already configured
    rec.send(12, m("get_stats", tag=11))
    rec.expect()
    return rec


def _session_policy() -> SessionRecorder:
    rec = _start("fallback policy: schedule, photocell, level", 0x6000)
    rec.expect()  # no photocell fitted: the fallback level, 100
    rec.inputs(1, photocell=1)
    rec.tick(1)
    rec.expect()
    rec.inputs(2, photocell=0)
    rec.tick(2)
    rec.expect()
    _configure(
        rec, 10,
        m("config_fallback", heartbeat_ms=600000, level=40, lease_ms=1000),
        m("config_schedule", index=3, minute=1320, level=70),
        m("config_schedule", index=0, minute=360, level=0),
        m("config_schedule", index=5, minute=1080, level=100),
    )  # fmt: skip
    rec.inputs(20, photocell=1)
    rec.tick(20)
    rec.expect()  # clock unknown: photocell dark -> 40
    # 17:59:00 local at UTC+1.
    rec.send(30, m("heartbeat", tag=1, unix_time=1_699_981_140, utc_offset_min=60))
    rec.tick(30)
    rec.expect()  # schedule: the 06:00 step, 0
    rec.tick(60_030)
    rec.expect()  # 18:00: 100
    rec.send(60_040, m("heartbeat", tag=2, unix_time=1_700_006_400, utc_offset_min=60))
    rec.tick(60_040)
    rec.expect()  # 01:00: before the first step, so yesterday's 22:00 step, 70
    rec.send(60_050, m("set_level", tag=3, level=10))
    rec.tick(60_060)
    rec.expect()
    rec.ticks(61_050, 61_060)  # the level's lease ends: back to the schedule
    rec.send(61_100, m("heartbeat", tag=4, unix_time=0, utc_offset_min=60))
    rec.tick(61_110)
    rec.expect()  # clock unknown again: photocell dark -> 40
    rec.inputs(61_120, photocell=7)  # not a known value: treated as not fitted
    rec.tick(61_120)
    rec.expect()
    return rec


def _session_noise() -> SessionRecorder:
    rec = _start("line noise, idle drop and chunking", 0x7000)
    rec.rx(1, b"\x01\x02\x03")  # garbage alone in a chunk: dropped
    rec.send(2, m("get_config", tag=1))
    frame = rec.frame(DICTIONARY.encode("get_config", tag=2))
    rec.rx(100, frame[:4])
    rec.rx(110, frame[4:])  # within RX_IDLE_MS: one frame
    frame = rec.frame(DICTIONARY.encode("get_config", tag=3))
    rec.rx(200, frame[:4])
    rec.rx(221, frame[4:])  # 21 ms of silence: the start was dropped, the rest is garbage
    rec.rx(230, frame)  # the host resends the same seq
    again = rec.frame(DICTIONARY.encode("get_config", tag=4))
    rec.rx(300, again[:3])
    rec.tick(320)  # 20 ms: not yet
    rec.tick(321)  # 21 ms: dropped by the tick
    rec.rx(330, again)
    frame = rec.frame(DICTIONARY.encode("get_stats", tag=5))
    for i in range(len(frame)):
        rec.rx(340, frame[i : i + 1])
    first = rec.frame(DICTIONARY.encode("get_config", tag=6))
    lost = rec.frame(DICTIONARY.encode("get_config", tag=7))
    rec.rx(350, first + b"\x55" + lost)  # the garbage swallows the frame after it
    rec.rx(360, lost)  # resent
    rec.rx(370, b"\x7e\x7e" + rec.frame(DICTIONARY.encode("get_stats", tag=8)))
    rec.expect()
    return rec


def _session_reset_keeps_outputs() -> SessionRecorder:
    rec = _start("config_reset keeps the outputs until their leases end", 0x8000)
    _configure(
        rec, 10,
        m("config_relay", channel=1, default_on=0, max_duration_ms=5000),
        m("config_relay", channel=4, default_on=0, max_duration_ms=0),
        m("config_fallback", heartbeat_ms=1000, level=30, lease_ms=4000),
    )  # fmt: skip
    rec.send(20, _hb(1), m("set_relay", tag=2, channel=1, on=0),
             m("set_level", tag=3, level=25))  # fmt: skip
    rec.tick(30)
    rec.expect()
    rec.send(40, m("config_reset", tag=4))
    rec.tick(50)
    rec.expect()  # nothing moved
    rec.ticks(1000, 5100, 1000)  # no heartbeat watch while unconfigured; leases end
    rec.expect()
    _configure(rec, 5200, m("config_fallback", heartbeat_ms=1000, level=30, lease_ms=4000))
    rec.ticks(5300, 6300, 100)  # the watch starts at finalize: fallback at 6200
    rec.expect()
    return rec


def session_vectors() -> list[dict[str, Any]]:
    """Scripted conversations run through the twin, with its answers and outputs."""
    sessions = [
        _session_identify(),
        _session_config(),
        _session_sequence(),
        _session_fallback(),
        _session_leases(),
        _session_trip(),
        _session_events(),
        _session_errors(),
        _session_policy(),
        _session_noise(),
        _session_reset_keeps_outputs(),
    ]
    return [session.to_json() for session in sessions]


def build_all() -> dict[str, str]:
    """Every vector file's text, by file name."""
    return {
        "crc.json": _dump(crc_vectors()),
        "frames.json": _dump(frame_vectors()),
        "messages.json": _dump(message_vectors()),
        "sessions.json": _dump(session_vectors()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if any file is stale")
    options = parser.parse_args(argv)
    module = render_dictionary_module(DICTIONARY_JSON.read_bytes())
    if not options.check and DICTIONARY_MODULE.read_text() != module:
        DICTIONARY_MODULE.write_text(module)
        print(f"wrote {DICTIONARY_MODULE.relative_to(REPO)}; restarting to use it")
        os.execv(sys.executable, [sys.executable, __file__, *(argv or sys.argv[1:])])  # noqa: S606
    outputs = {DICTIONARY_MODULE: module}
    outputs.update({VECTORS / name: text for name, text in build_all().items()})
    stale = [
        path for path, text in outputs.items() if not path.exists() or path.read_text() != text
    ]
    if options.check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
        return 1 if stale else 0
    VECTORS.mkdir(exist_ok=True)
    for path in stale:
        path.write_text(outputs[path])
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
