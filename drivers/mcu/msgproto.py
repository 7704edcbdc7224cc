"""Messages of the pole-MCU bridge (PROTOCOL.md sections 1 'Messages' and 3).

A frame's payload is zero or more messages; a message is a LEB128 id and its arguments in
the order of its format. The ids and formats come from the dictionary the MCU declares,
so the codec is data-driven: ``Dictionary.parse`` turns the dictionary's JSON into
``MessageFormat`` objects, which encode and decode. Only ``identify`` and
``identify_response`` are fixed (``FIXED_IDENTIFY``), because they fetch the dictionary.

Decoding is strict (canonical LEB128 only, range-checked) so that the C implementation and
this one accept exactly the same bytes, and a corrupted-but-CRC-valid payload is refused
instead of being misread.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from smartpole.drivers.errors import CodecError, ProtocolError

PROTOCOL_NAME: Final = "smartpole-mcu"
PROTOCOL_VERSION: Final = 1
U32_MAX: Final = 0xFFFFFFFF
I32_MIN: Final = -(1 << 31)
I32_MAX: Final = (1 << 31) - 1
LEB_MAX_BYTES: Final = 5


class MessageError(ProtocolError):
    """A payload could not be decoded; ``position`` is the byte offset of the fault."""

    def __init__(self, reason: str, *, position: int, message_start: int) -> None:
        super().__init__(f"{reason} at byte {position} (message starting at {message_start})")
        self.reason = reason
        self.position = position
        self.message_start = message_start


class UnknownMessageError(MessageError):
    """The message id is not in the dictionary (the MCU answers ``unknown_command``)."""


class MalformedMessageError(MessageError):
    """Bad LEB128, a value out of range or an argument past the end (``malformed``)."""


class DictionaryError(ProtocolError):
    """The MCU's dictionary is not a valid smartpole-mcu dictionary."""


class UnsupportedVersionError(DictionaryError):
    """The dictionary declares a protocol version this code does not speak."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"MCU speaks smartpole-mcu protocol version {version!r}, "
            f"this host speaks version {PROTOCOL_VERSION}"
        )
        self.version = version


# --- LEB128 and zigzag -------------------------------------------------------------------


def encode_uleb(value: int) -> bytes:
    """Canonical LEB128 of an unsigned 32-bit value."""
    if not 0 <= value <= U32_MAX:
        raise CodecError(f"value {value} outside 0..{U32_MAX}")
    out = bytearray()
    while True:
        group = value & 0x7F
        value >>= 7
        if value:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


def decode_uleb(
    data: bytes | bytearray | memoryview, pos: int, *, message_start: int | None = None
) -> tuple[int, int]:
    """Decode canonical LEB128 at ``pos``; returns (value, position after it)."""
    start = pos if message_start is None else message_start
    value = 0
    for index in range(LEB_MAX_BYTES):
        if pos + index >= len(data):
            raise MalformedMessageError(
                "truncated LEB128", position=pos + index, message_start=start
            )
        byte = data[pos + index]
        if index == LEB_MAX_BYTES - 1 and byte > 0x0F:
            raise MalformedMessageError(
                "LEB128 overflows 32 bits", position=pos + index, message_start=start
            )
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if byte == 0 and index > 0:
                raise MalformedMessageError(
                    "non-canonical LEB128 (final 0x00)", position=pos + index, message_start=start
                )
            return value, pos + index + 1
    raise MalformedMessageError("LEB128 longer than 5 bytes", position=pos, message_start=start)


def zigzag_encode(value: int) -> int:
    """Map a signed 32-bit value to unsigned: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ..."""
    if not I32_MIN <= value <= I32_MAX:
        raise CodecError(f"value {value} outside signed 32-bit range")
    return ((value << 1) ^ (value >> 31)) & U32_MAX


def zigzag_decode(value: int) -> int:
    """Inverse of ``zigzag_encode`` for 0..2**32-1."""
    return (value >> 1) ^ -(value & 1)


# --- formats -----------------------------------------------------------------------------


class ArgType(enum.Enum):
    """An argument's wire format; the value is its spelling in the dictionary."""

    U32 = "%u"
    U16 = "%hu"
    U8 = "%c"
    I32 = "%i"
    BYTES = "%*s"

    @property
    def maximum(self) -> int:
        """The largest value of an unsigned type (the length limit for bytes)."""
        return {ArgType.U16: 0xFFFF, ArgType.U8: 0xFF}.get(self, U32_MAX)


_ARG_TYPES: Final = {t.value: t for t in ArgType}
_NAME: Final = re.compile(r"[a-z_][a-z0-9_]*")


def _encode_arg(kind: ArgType, name: str, value: object) -> bytes:
    if kind is ArgType.BYTES:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise CodecError(f"argument {name} must be bytes, not {type(value).__name__}")
        return encode_uleb(len(value)) + bytes(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CodecError(f"argument {name} must be an int, not {type(value).__name__}")
    if kind is ArgType.I32:
        if not I32_MIN <= value <= I32_MAX:
            raise CodecError(f"argument {name}={value} outside signed 32-bit range")
        return encode_uleb(zigzag_encode(value))
    if not 0 <= value <= kind.maximum:
        raise CodecError(f"argument {name}={value} outside 0..{kind.maximum}")
    return encode_uleb(value)


@dataclass(frozen=True)
class MessageFormat:
    """One message of the dictionary: its name, id and typed arguments in wire order."""

    name: str
    id: int
    args: tuple[tuple[str, ArgType], ...]

    @classmethod
    def parse(cls, key: str, msg_id: int) -> MessageFormat:
        """Parse a dictionary key such as ``set_relay tag=%c channel=%c on=%c``."""
        words = key.split(" ")
        if not _NAME.fullmatch(words[0]):
            raise DictionaryError(f"bad message name in {key!r}")
        args: list[tuple[str, ArgType]] = []
        for word in words[1:]:
            arg, sep, spelling = word.partition("=")
            if not sep or not _NAME.fullmatch(arg) or spelling not in _ARG_TYPES:
                raise DictionaryError(f"bad argument {word!r} in {key!r}")
            if any(arg == seen for seen, _ in args):
                raise DictionaryError(f"duplicate argument {arg!r} in {key!r}")
            args.append((arg, _ARG_TYPES[spelling]))
        if not 0 <= msg_id <= U32_MAX:
            raise DictionaryError(f"id {msg_id} of {key!r} outside 0..{U32_MAX}")
        return cls(words[0], msg_id, tuple(args))

    @property
    def key(self) -> str:
        """The dictionary spelling of this format."""
        return " ".join([self.name, *(f"{arg}={kind.value}" for arg, kind in self.args)])

    def encode(self, **args: int | bytes) -> bytes:
        """The message's bytes (id and arguments); every argument must be given."""
        return self.encode_args(args)

    def encode_args(self, args: Mapping[str, object]) -> bytes:
        """Like ``encode`` with the arguments in a mapping."""
        extra = set(args) - {arg for arg, _ in self.args}
        if extra:
            raise CodecError(f"{self.name} has no argument(s) {sorted(extra)}")
        out = bytearray(encode_uleb(self.id))
        for arg, kind in self.args:
            if arg not in args:
                raise CodecError(f"{self.name} needs argument {arg}")
            out += _encode_arg(kind, arg, args[arg])
        return bytes(out)

    def decode_args(
        self, data: bytes | bytearray | memoryview, pos: int, message_start: int
    ) -> tuple[dict[str, int | bytes], int]:
        """Decode the arguments at ``pos`` (after the id); returns (args, end position)."""
        values: dict[str, int | bytes] = {}
        for arg, kind in self.args:
            at = pos
            raw, pos = decode_uleb(data, pos, message_start=message_start)
            if kind is ArgType.BYTES:
                if pos + raw > len(data):
                    raise MalformedMessageError(
                        f"{self.name}.{arg}: {raw} bytes run past the payload",
                        position=at,
                        message_start=message_start,
                    )
                values[arg] = bytes(data[pos : pos + raw])
                pos += raw
            elif kind is ArgType.I32:
                values[arg] = zigzag_decode(raw)
            elif raw > kind.maximum:
                raise MalformedMessageError(
                    f"{self.name}.{arg}={raw} exceeds {kind.maximum}",
                    position=at,
                    message_start=message_start,
                )
            else:
                values[arg] = raw
        return values, pos


@dataclass(frozen=True)
class Message:
    """A decoded message: its name and argument values (``bytes`` for ``%*s``)."""

    name: str
    args: dict[str, int | bytes]


IDENTIFY: Final = MessageFormat.parse("identify offset=%u count=%c", 0)
IDENTIFY_RESPONSE: Final = MessageFormat.parse("identify_response offset=%u data=%*s", 1)
FIXED_IDENTIFY: Final = {IDENTIFY.name: IDENTIFY, IDENTIFY_RESPONSE.name: IDENTIFY_RESPONSE}


def decode_with(
    formats: Mapping[int, MessageFormat], payload: bytes | bytearray | memoryview
) -> tuple[list[Message], MessageError | None]:
    """Decode messages by id until the end or the first error (returned, not raised)."""
    messages: list[Message] = []
    pos = 0
    while pos < len(payload):
        start = pos
        try:
            msg_id, pos = decode_uleb(payload, pos, message_start=start)
            fmt = formats.get(msg_id)
            if fmt is None:
                raise UnknownMessageError(
                    f"unknown message id {msg_id}", position=start, message_start=start
                )
            args, pos = fmt.decode_args(payload, pos, start)
        except MessageError as error:
            return messages, error
        messages.append(Message(fmt.name, args))
    return messages, None


# --- the dictionary ----------------------------------------------------------------------

_INT_FIELDS: Final = ("version", "max_frame", "window", "relays", "events")


def _formats(table: object, what: str) -> dict[str, MessageFormat]:
    if not isinstance(table, dict):
        raise DictionaryError(f"dictionary {what} must be an object")
    formats: dict[str, MessageFormat] = {}
    ids: set[int] = set()
    for key, msg_id in table.items():
        if not isinstance(msg_id, int) or isinstance(msg_id, bool):
            raise DictionaryError(f"id of {key!r} must be an integer")
        fmt = MessageFormat.parse(key, msg_id)
        if fmt.name in formats:
            raise DictionaryError(f"message {fmt.name!r} declared twice in {what}")
        if msg_id in ids:
            raise DictionaryError(f"id {msg_id} used twice in {what}")
        ids.add(msg_id)
        formats[fmt.name] = fmt
    return formats


class Dictionary:
    """The MCU's declared command dictionary: identity, limits and message formats."""

    def __init__(
        self,
        *,
        raw: bytes,
        version: int,
        build: str,
        max_frame: int,
        window: int,
        relays: int,
        events: int,
        commands: dict[str, MessageFormat],
        responses: dict[str, MessageFormat],
    ) -> None:
        self.raw = raw
        self.version = version
        self.build = build
        self.max_frame = max_frame
        self.window = window
        self.relays = relays
        self.events = events
        self.commands = commands
        self.responses = responses
        self._by_id_host = {fmt.id: fmt for fmt in commands.values()}
        self._by_id_mcu = {fmt.id: fmt for fmt in responses.values()}

    @classmethod
    def parse(cls, raw: bytes) -> Dictionary:
        """Validate the dictionary's JSON and build its formats.

        Raises ``UnsupportedVersionError`` for a version other than 1 and
        ``DictionaryError`` for anything else that is not a well-formed dictionary.
        """
        try:
            doc: Any = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DictionaryError(f"dictionary is not UTF-8 JSON: {error}") from error
        if not isinstance(doc, dict):
            raise DictionaryError("dictionary must be a JSON object")
        if doc.get("protocol") != PROTOCOL_NAME:
            raise DictionaryError(
                f"dictionary protocol is {doc.get('protocol')!r}, not {PROTOCOL_NAME!r}"
            )
        for field in _INT_FIELDS:
            value = doc.get(field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise DictionaryError(f"dictionary field {field!r} must be an integer")
        if doc["version"] != PROTOCOL_VERSION:
            raise UnsupportedVersionError(doc["version"])
        if not isinstance(doc.get("build"), str):
            raise DictionaryError("dictionary field 'build' must be a string")
        if not 5 <= doc["max_frame"] <= 64:
            raise DictionaryError(f"max_frame {doc['max_frame']} outside 5..64")
        if not 1 <= doc["window"] <= 8:
            raise DictionaryError(f"window {doc['window']} outside 1..8")
        commands = _formats(doc.get("commands"), "commands")
        responses = _formats(doc.get("responses"), "responses")
        for fixed, table in ((IDENTIFY, commands), (IDENTIFY_RESPONSE, responses)):
            if table.get(fixed.name) != fixed:
                raise DictionaryError(f"dictionary must declare {fixed.key!r} with id {fixed.id}")
        overlap = set(commands) & set(responses)
        if overlap:
            raise DictionaryError(f"names used as command and response: {sorted(overlap)}")
        return cls(
            raw=bytes(raw),
            version=doc["version"],
            build=doc["build"],
            max_frame=doc["max_frame"],
            window=doc["window"],
            relays=doc["relays"],
            events=doc["events"],
            commands=commands,
            responses=responses,
        )

    def format(self, name: str) -> MessageFormat:
        """The command or response format called ``name``."""
        fmt = self.commands.get(name) or self.responses.get(name)
        if fmt is None:
            raise CodecError(f"message {name!r} is not in the dictionary")
        return fmt

    def encode(self, name: str, **args: int | bytes) -> bytes:
        """Encode a command or a response by name."""
        return self.format(name).encode_args(args)

    def decode_partial(
        self, payload: bytes | bytearray | memoryview, *, from_mcu: bool
    ) -> tuple[list[Message], MessageError | None]:
        """The messages before the first bad one, and that error (or None)."""
        return decode_with(self._by_id_mcu if from_mcu else self._by_id_host, payload)

    def decode(self, payload: bytes | bytearray | memoryview, *, from_mcu: bool) -> list[Message]:
        """Every message of a payload; raises ``MessageError`` on the first bad one."""
        messages, error = self.decode_partial(payload, from_mcu=from_mcu)
        if error is not None:
            raise error
        return messages
