"""The shared vectors in firmware-bridge/vectors: fresh, and reproduced by the Python side.

The C implementation runs the same files; these tests keep the files honest on this side:
the committed vectors are exactly what the generator produces now, and the codec and the
twin reproduce every one of them independently of the generator's code paths.
"""

from __future__ import annotations

import importlib.util
import json
import zlib
from types import ModuleType
from typing import Any

import pytest

from helpers.paths import REPO
from smartpole.drivers.mcu.dictionary import DICTIONARY, DICTIONARY_BYTES
from smartpole.drivers.mcu.frame import FrameDecoder, crc16_ccitt, encode_frame
from smartpole.drivers.mcu.msgproto import (
    ArgType,
    MalformedMessageError,
    Message,
    UnknownMessageError,
)
from smartpole.drivers.sim.mcu.twin_session import replay

BRIDGE = REPO / "firmware-bridge"
VECTORS = BRIDGE / "vectors"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_vectors", BRIDGE / "tools" / "make_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dictionary_module_holds_the_canonical_bytes() -> None:
    assert (BRIDGE / "dictionary.json").read_bytes() == DICTIONARY_BYTES
    generator = _generator()
    expected = generator.render_dictionary_module(DICTIONARY_BYTES)
    assert (REPO / "drivers" / "mcu" / "dictionary.py").read_text() == expected


def test_vector_files_are_fresh() -> None:
    for name, text in _generator().build_all().items():
        assert (VECTORS / name).read_text() == text, (
            f"{name} is stale: run firmware-bridge/tools/make_vectors.py"
        )


# --- crc.json ----------------------------------------------------------------------------


def test_crc_vectors() -> None:
    vectors = _load("crc.json")
    by_data = {v["data"]: v for v in vectors}
    assert by_data[b"123456789".hex()]["crc16"] == 0x29B1
    assert by_data[b"123456789".hex()]["crc32"] == 0xCBF43926
    for vector in vectors:
        data = bytes.fromhex(vector["data"])
        assert crc16_ccitt(data) == vector["crc16"]
        assert zlib.crc32(data) == vector["crc32"]


# --- frames.json -------------------------------------------------------------------------


def test_frame_encode_vectors() -> None:
    vectors = _load("frames.json")["encode"]
    assert len(vectors) >= 10
    for v in vectors:
        frame = encode_frame(v["seq"], bytes.fromhex(v["payload"]), nak=v["nak"])
        assert frame.hex() == v["frame"], v["name"]
        (decoded,) = FrameDecoder(from_mcu=v["direction"] == "mcu").feed(frame)
        assert (decoded.seq, decoded.nak, decoded.payload.hex()) == (
            v["seq"],
            v["nak"],
            v["payload"],
        )


def _decode(direction: str, chunks: list[bytes]) -> dict[str, Any]:
    decoder = FrameDecoder(from_mcu=direction == "mcu")
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    return {
        "payloads": [f.payload.hex() for f in frames],
        "seqs": [f.seq for f in frames],
        "naks": [f.nak for f in frames],
        "discarded": decoder.discarded_bytes,
        "discards": decoder.discards,
        "remainder": len(decoder.pending),
    }


@pytest.mark.parametrize("vector", _load("frames.json")["streams"], ids=lambda v: v["name"])
def test_frame_stream_vectors(vector: dict[str, Any]) -> None:
    stream = bytes.fromhex(vector["stream"])
    whole = _decode(vector["direction"], [stream])
    assert whole == {key: vector[key] for key in whole}
    bytewise = _decode(vector["direction"], [stream[i : i + 1] for i in range(len(stream))])
    assert bytewise == vector["bytewise"]


def test_stream_vectors_by_hand() -> None:
    streams = {v["name"]: v for v in _load("frames.json")["streams"]}
    # Garbage arriving with the frame after it swallows that frame, by the discard rule...
    garbage = streams["garbage before the first frame"]
    assert len(garbage["payloads"]) == 1
    assert garbage["discards"] == 1
    # ...but the same bytes trickling in one at a time lose only the garbage.
    assert len(garbage["bytewise"]["payloads"]) == 2
    assert garbage["bytewise"]["discarded"] == 3
    stray = streams["stray sync bytes"]
    assert (len(stray["payloads"]), stray["discarded"], stray["discards"]) == (2, 3, 3)
    assert streams["NAK frames from the mcu"]["naks"] == [False, True, False]
    assert streams["max-size frame"]["payloads"][0] == bytes(range(0x20, 0x20 + 59)).hex()


# --- messages.json -----------------------------------------------------------------------


def _args(fmt_args: tuple[tuple[str, ArgType], ...], raw: dict[str, Any]) -> dict[str, Any]:
    kinds = dict(fmt_args)
    return {k: bytes.fromhex(v) if kinds[k] is ArgType.BYTES else v for k, v in raw.items()}


def test_valid_message_vectors() -> None:
    vectors = _load("messages.json")["valid"]
    seen = set()
    for v in vectors:
        fmt = DICTIONARY.format(v["name"])
        args = _args(fmt.args, v["args"])
        assert DICTIONARY.encode(v["name"], **args).hex() == v["bytes"], v
        from_mcu = v["direction"] == "mcu"
        assert DICTIONARY.decode(bytes.fromhex(v["bytes"]), from_mcu=from_mcu) == [
            Message(v["name"], args)
        ]
        seen.add(v["name"])
    assert seen == set(DICTIONARY.commands) | set(DICTIONARY.responses)


def test_invalid_message_vectors() -> None:
    vectors = _load("messages.json")["invalid"]
    kinds = {v["error"] for v in vectors}
    assert kinds == {"unknown", "malformed"}
    for v in vectors:
        messages, error = DICTIONARY.decode_partial(
            bytes.fromhex(v["bytes"]), from_mcu=v["direction"] == "mcu"
        )
        expected = UnknownMessageError if v["error"] == "unknown" else MalformedMessageError
        assert isinstance(error, expected), v["name"]
        assert len(messages) == v["decoded"], v["name"]


# --- sessions.json -----------------------------------------------------------------------


@pytest.mark.parametrize("session", _load("sessions.json"), ids=lambda s: s["name"])
def test_twin_reproduces_session(session: dict[str, Any]) -> None:
    assert replay(session) == []


def test_sessions_cover_every_message() -> None:
    sent, answered = set(), set()
    for session in _load("sessions.json"):
        for step in session["steps"]:
            for key, from_mcu, names in (("rx", False, sent), ("tx", True, answered)):
                if key not in step:
                    continue
                for frame in FrameDecoder(from_mcu=from_mcu).feed(bytes.fromhex(step[key])):
                    messages, _ = DICTIONARY.decode_partial(frame.payload, from_mcu=from_mcu)
                    names.update(m.name for m in messages)
    assert sent == set(DICTIONARY.commands)
    assert answered == set(DICTIONARY.responses)


def test_session_expectations_by_hand() -> None:
    sessions = {s["name"]: s for s in _load("sessions.json")}
    for session in sessions.values():
        # Every session starts with the boot event, pushed at the first tick.
        assert session["steps"][1] == {
            "t": 0,
            "tick": True,
            "tx": "0c1025000101000000" + "5b62" + "7e",
        }
    fallback = [s["expect"] for s in sessions["heartbeat lapse, fallback and back"]["steps"]
                if "expect" in s]  # fmt: skip
    assert fallback[2] == {"level": 60, "relays": 0xFE, "source": 3, "fallback": True,
                           "tripped": False, "configured": True}  # fmt: skip
    sequence = sessions["sequence numbers, NAK and duplicates"]["steps"]
    naks = [s["tx"] for s in sequence if s.get("tx", "").startswith("0531")]
    assert naks == ["0531c4887e"]
