"""The bridge's messages: LEB128 and zigzag, formats, the dictionary and payload decoding."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartpole.drivers.errors import CodecError, ProtocolError
from smartpole.drivers.mcu.dictionary import DICTIONARY, DICTIONARY_BYTES
from smartpole.drivers.mcu.msgproto import (
    FIXED_IDENTIFY,
    ArgType,
    Dictionary,
    DictionaryError,
    MalformedMessageError,
    Message,
    MessageError,
    MessageFormat,
    UnknownMessageError,
    UnsupportedVersionError,
    decode_uleb,
    encode_uleb,
    zigzag_decode,
    zigzag_encode,
)

U32_MAX = 0xFFFFFFFF
u32 = st.integers(0, U32_MAX)
i32 = st.integers(-(1 << 31), (1 << 31) - 1)
ALL_FORMATS = [*DICTIONARY.commands.values(), *DICTIONARY.responses.values()]


# --- LEB128 and zigzag -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16383, "ff7f"),
        (16384, "808001"),
        (U32_MAX, "ffffffff0f"),
    ],
)
def test_uleb_by_hand(value: int, encoded: str) -> None:
    assert encode_uleb(value).hex() == encoded
    assert decode_uleb(bytes.fromhex(encoded), 0) == (value, len(encoded) // 2)


@given(u32, st.binary(max_size=4), st.binary(max_size=4))
def test_uleb_round_trip(value: int, before: bytes, after: bytes) -> None:
    encoded = encode_uleb(value)
    assert len(encoded) == max(1, (value.bit_length() + 6) // 7)
    assert decode_uleb(before + encoded + after, len(before)) == (
        value,
        len(before) + len(encoded),
    )


@pytest.mark.parametrize(
    "encoded",
    [
        "8000",  # zero with a continuation
        "8100",  # final 0x00 in a multi-byte encoding
        "ff8000",
        "ffffffff10",  # fifth byte above 0x0F: more than 32 bits
        "ffffffff8f01",  # six bytes
        "8080808080",  # fifth byte has the continuation bit
        "",
        "80",
        "ffffffff",
    ],
)
def test_uleb_rejects_non_canonical_and_truncated(encoded: str) -> None:
    with pytest.raises(MalformedMessageError):
        decode_uleb(bytes.fromhex(encoded), 0)


@given(st.binary(max_size=8))
def test_uleb_accepts_exactly_the_canonical_encodings(data: bytes) -> None:
    try:
        value, end = decode_uleb(data, 0)
    except MalformedMessageError:
        return
    assert encode_uleb(value) == data[:end]


@pytest.mark.parametrize("value", [-1, U32_MAX + 1])
def test_uleb_refuses_out_of_range(value: int) -> None:
    with pytest.raises(CodecError):
        encode_uleb(value)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, 0), (-1, 1), (1, 2), (-2, 3), ((1 << 31) - 1, U32_MAX - 1), (-(1 << 31), U32_MAX)],
)
def test_zigzag_by_hand(value: int, encoded: int) -> None:
    assert zigzag_encode(value) == encoded
    assert zigzag_decode(encoded) == value


@given(i32)
def test_zigzag_round_trip(value: int) -> None:
    assert zigzag_decode(zigzag_encode(value)) == value
    assert 0 <= zigzag_encode(value) <= U32_MAX


@given(u32)
def test_zigzag_decode_covers_every_u32(value: int) -> None:
    assert zigzag_encode(zigzag_decode(value)) == value


# --- formats and messages ----------------------------------------------------------------


def _arg_values(kind: ArgType) -> st.SearchStrategy[int | bytes]:
    if kind is ArgType.BYTES:
        return st.binary(max_size=48)
    if kind is ArgType.I32:
        return i32
    return st.integers(0, kind.maximum)


@st.composite
def messages(draw: st.DrawFn, formats: list[MessageFormat] = ALL_FORMATS) -> Message:
    fmt = draw(st.sampled_from(formats))
    return Message(fmt.name, {arg: draw(_arg_values(kind)) for arg, kind in fmt.args})


def test_every_format_of_the_dictionary_parses() -> None:
    assert DICTIONARY.commands["set_relay"] == MessageFormat(
        "set_relay", 11, (("tag", ArgType.U8), ("channel", ArgType.U8), ("on", ArgType.U8))
    )
    assert DICTIONARY.responses["identify_response"].key == "identify_response offset=%u data=%*s"
    assert len(DICTIONARY.commands) == 16
    assert len(DICTIONARY.responses) == 9


def test_messages_by_hand() -> None:
    assert DICTIONARY.encode("set_relay", tag=1, channel=2, on=1) == bytes.fromhex("0b010201")
    assert DICTIONARY.encode("heartbeat", tag=1, unix_time=0, utc_offset_min=-1) == bytes.fromhex(
        "0a010001"
    )
    assert DICTIONARY.encode("identify_response", offset=0, data=b"ab") == bytes.fromhex(
        "0100026162"
    )


@given(messages())
def test_message_round_trip(message: Message) -> None:
    from_mcu = message.name in DICTIONARY.responses
    encoded = DICTIONARY.encode(message.name, **message.args)
    assert DICTIONARY.decode(encoded, from_mcu=from_mcu) == [message]


@given(st.booleans(), st.data())
def test_several_messages_in_one_payload(from_mcu: bool, data: st.DataObject) -> None:
    table = DICTIONARY.responses if from_mcu else DICTIONARY.commands
    sent = data.draw(st.lists(messages(list(table.values())), max_size=6))
    payload = b"".join(DICTIONARY.encode(m.name, **m.args) for m in sent)
    assert DICTIONARY.decode(payload, from_mcu=from_mcu) == sent
    assert DICTIONARY.decode_partial(payload, from_mcu=from_mcu) == (sent, None)


def test_empty_payload_is_no_messages() -> None:
    assert DICTIONARY.decode(b"", from_mcu=True) == []
    assert DICTIONARY.decode(b"", from_mcu=False) == []


@given(st.binary(max_size=80), st.booleans())
def test_arbitrary_payloads_only_ever_raise_message_error(data: bytes, from_mcu: bool) -> None:
    decoded, error = DICTIONARY.decode_partial(data, from_mcu=from_mcu)
    if error is None:
        assert DICTIONARY.decode(data, from_mcu=from_mcu) == decoded
        # Decoding is strict, so a payload that decodes is the canonical encoding.
        assert b"".join(DICTIONARY.encode(m.name, **m.args) for m in decoded) == data
        return
    with pytest.raises(MessageError) as caught:
        DICTIONARY.decode(data, from_mcu=from_mcu)
    assert str(caught.value) == str(error)
    assert 0 <= error.message_start <= error.position <= len(data)
    # The messages before the bad one re-encode to exactly the bytes before it.
    prefix = b"".join(DICTIONARY.encode(m.name, **m.args) for m in decoded)
    assert prefix == data[: error.message_start]


@pytest.mark.parametrize(
    ("payload", "from_mcu", "error", "position", "before"),
    [
        ("63", False, UnknownMessageError, 0, 0),
        ("100163", False, UnknownMessageError, 2, 1),
        ("2100", False, UnknownMessageError, 0, 0),  # a response id sent to the MCU
        ("0a0100", True, UnknownMessageError, 0, 0),  # a command id sent to the host
        ("0b80020101", False, MalformedMessageError, 1, 0),  # %c of 256
        ("060080800400", False, MalformedMessageError, 2, 0),  # %hu of 65536
        ("0b0102", False, MalformedMessageError, 3, 0),  # truncated
        ("0100057b7d", True, MalformedMessageError, 2, 0),  # %*s past the end
        ("02010b8100", False, MalformedMessageError, 4, 1),  # non-canonical
    ],
)
def test_decode_errors_say_where(
    payload: str, from_mcu: bool, error: type[MessageError], position: int, before: int
) -> None:
    data = bytes.fromhex(payload)
    with pytest.raises(error) as caught:
        DICTIONARY.decode(data, from_mcu=from_mcu)
    assert caught.value.position == position
    assert f"at byte {position}" in str(caught.value)
    decoded, partial = DICTIONARY.decode_partial(data, from_mcu=from_mcu)
    assert len(decoded) == before
    assert isinstance(partial, error)
    assert isinstance(partial, ProtocolError)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("set_relay", {"tag": 256, "channel": 1, "on": 1}),
        ("set_relay", {"tag": -1, "channel": 1, "on": 1}),
        ("set_relay", {"tag": 1, "channel": 1}),  # missing
        ("set_relay", {"tag": 1, "channel": 1, "on": 1, "extra": 1}),
        ("set_relay", {"tag": True, "channel": 1, "on": 1}),
        ("set_relay", {"tag": b"\x01", "channel": 1, "on": 1}),
        ("config_schedule", {"index": 0, "minute": 65536, "level": 0}),
        ("heartbeat", {"tag": 1, "unix_time": 0, "utc_offset_min": 1 << 31}),
        ("heartbeat", {"tag": 1, "unix_time": 1 << 32, "utc_offset_min": 0}),
        ("identify_response", {"offset": 0, "data": 5}),
        ("no_such_message", {}),
    ],
)
def test_encode_refuses_bad_arguments(name: str, args: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        DICTIONARY.encode(name, **args)


def test_fixed_identify_works_without_a_dictionary() -> None:
    identify = FIXED_IDENTIFY["identify"]
    assert identify.encode(offset=0, count=48) == bytes.fromhex("000030")
    response = FIXED_IDENTIFY["identify_response"]
    encoded = response.encode(offset=48, data=b"xyz")
    assert encoded == bytes.fromhex("01300378797a")
    assert response.decode_args(encoded, 1, 0) == ({"offset": 48, "data": b"xyz"}, 6)
    assert DICTIONARY.commands["identify"] == identify
    assert DICTIONARY.responses["identify_response"] == response


# --- the dictionary ----------------------------------------------------------------------


def test_canonical_dictionary() -> None:
    assert DICTIONARY.raw == DICTIONARY_BYTES
    assert (DICTIONARY.version, DICTIONARY.max_frame, DICTIONARY.window) == (1, 64, 4)
    assert (DICTIONARY.relays, DICTIONARY.events) == (8, 16)
    assert DICTIONARY.build == "smartpole-mcu 1.0.0"


def _variant(**changes: Any) -> bytes:
    doc = json.loads(DICTIONARY_BYTES)
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def _commands(**changes: Any) -> dict[str, Any]:
    commands: dict[str, Any] = json.loads(DICTIONARY_BYTES)["commands"]
    commands.update(changes)
    return commands


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"protocol": "smartpole-mcu"',
        _variant(protocol="klipper"),
        _variant(protocol=None),
        _variant(version="1"),
        _variant(window=0),
        _variant(window=9),
        _variant(max_frame=65),
        _variant(build=3),
        _variant(relays=None),
        _variant(commands=None),
        _variant(commands=[]),
        _variant(commands=_commands(**{"get_config tag=%c": "2"})),
        _variant(commands=_commands(**{"get_config tag=%q": 2})),
        _variant(commands=_commands(**{"Get tag=%c": 30})),
        _variant(commands=_commands(**{"get_thing tag": 30})),
        _variant(commands=_commands(**{"get_thing tag=%c tag=%c": 30})),
        _variant(commands=_commands(**{"get_config tag=%c": 11})),  # id used twice
        _variant(commands=_commands(**{"get_config tag=%c": -1})),
        _variant(commands=_commands(**{"get_config tag=%c extra=%u": 40})),  # name twice
        _variant(commands=_commands(**{"identify offset=%u count=%c": 40})),  # fixed id
        _variant(commands=_commands(**{"error tag=%c code=%c": 40})),  # name in both
    ],
)
def test_malformed_dictionaries_are_refused(raw: bytes) -> None:
    with pytest.raises(DictionaryError):
        Dictionary.parse(raw)


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unknown_version_is_refused_clearly(version: int) -> None:
    with pytest.raises(UnsupportedVersionError) as caught:
        Dictionary.parse(_variant(version=version))
    assert caught.value.version == version
    assert f"version {version}" in str(caught.value)
    assert isinstance(caught.value, ProtocolError)


def test_a_dictionary_may_add_messages() -> None:
    extended = Dictionary.parse(_variant(commands=_commands(**{"get_power tag=%c": 40})))
    assert extended.encode("get_power", tag=3) == bytes.fromhex("2803")
    assert extended.decode(bytes.fromhex("2803"), from_mcu=False) == [
        Message("get_power", {"tag": 3})
    ]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_dictionary_parser(raw: bytes) -> None:
    with contextlib.suppress(DictionaryError):
        Dictionary.parse(raw)


json_scalars = st.none() | st.booleans() | st.integers(-5, 70) | st.sampled_from(["", "x=%u"])
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a b=%c", "c"]), inner)
    ),
    max_leaves=6,
)
DICTIONARY_KEYS = sorted(json.loads(DICTIONARY_BYTES))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(DICTIONARY_KEYS), json_values, max_size=3))
def test_arbitrary_json_shapes_never_crash_the_dictionary_parser(changes: dict[str, Any]) -> None:
    doc = {**json.loads(DICTIONARY_BYTES), **changes}
    with contextlib.suppress(DictionaryError):
        Dictionary.parse(json.dumps(doc).encode())
