"""The connect sequence (PROTOCOL.md sections 3 and 4): identify, check, configure.

1. Download the dictionary with ``identify`` in chunks of 48 bytes. The link's window is 1
   until the dictionary is known, but several ``identify`` messages may share a frame, so
   the chunks are asked for eight at a time and the download runs at the wire's pace.
2. Parse it; refuse a protocol version other than 1 (:class:`McuVersionError`) and a
   dictionary that lacks a message this host uses or declares it with another format
   (:class:`McuDictionaryError`). Ids may differ: messages are encoded by the MCU's ids.
3. ``get_config``. Configured with the CRC of our configuration, and a ``boot_id`` we know
   or none: resume without touching any output. Otherwise ``config_reset``, the
   ``config_*`` messages and ``finalize_config``.

If the sequence is disturbed (a sequence resync after the first answer, or the ``boot_id``
changing between answers: the MCU reset under us) it starts over.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import structlog

from smartpole.drivers.errors import ProtocolError
from smartpole.drivers.mcu.codes import IDENTIFY_MAX_COUNT, ErrorCode
from smartpole.drivers.mcu.config import McuConfig
from smartpole.drivers.mcu.dictionary import DICTIONARY
from smartpole.drivers.mcu.errors import (
    McuCommandError,
    McuConfigError,
    McuDictionaryError,
    McuVersionError,
)
from smartpole.drivers.mcu.link import IDENTIFY_WINDOW
from smartpole.drivers.mcu.msgproto import (
    Dictionary,
    DictionaryError,
    UnsupportedVersionError,
)
from smartpole.drivers.mcu.requests import RequestChannel
from smartpole.drivers.mcu.results import Args, McuIdentity

log = structlog.get_logger(__name__)

CHUNK: Final = IDENTIFY_MAX_COUNT
BATCH: Final = 8
MAX_DICTIONARY_BYTES: Final = 64 * 1024
MAX_PASSES: Final = 4
CONFIG_TRIES: Final = 2


@dataclass(frozen=True)
class ConfigState:
    """``config_state``."""

    is_config: bool
    crc: int
    boot_id: int

    @classmethod
    def from_args(cls, args: Args) -> ConfigState:
        is_config, crc, boot_id = args["is_config"], args["crc"], args["boot_id"]
        assert isinstance(is_config, int)
        assert isinstance(crc, int)
        assert isinstance(boot_id, int)
        return cls(bool(is_config), crc, boot_id)


class _DisturbedError(Exception):
    """The MCU reset or the sequence was resynchronised during the sequence."""


def check_dictionary(raw: bytes) -> Dictionary:
    """Parse the MCU's dictionary and check it declares every message this host uses with
    the format it expects (the canonical dictionary's)."""
    try:
        dictionary = Dictionary.parse(raw)
    except UnsupportedVersionError as exc:
        raise McuVersionError(f"refusing the MCU's dictionary: {exc}", exc.version) from exc
    except DictionaryError as exc:
        raise McuDictionaryError(f"refusing the MCU's dictionary: {exc}") from exc
    problems: list[str] = []
    for theirs, ours in (
        (dictionary.commands, DICTIONARY.commands),
        (dictionary.responses, DICTIONARY.responses),
    ):
        for name, expected in ours.items():
            got = theirs.get(name)
            if got is None:
                problems.append(f"missing {expected.key!r}")
            elif got.key != expected.key:
                problems.append(f"{name} is {got.key!r}, expected {expected.key!r}")
    if problems:
        raise McuDictionaryError(
            f"the MCU's dictionary (build {dictionary.build!r}) does not match this host: "
            + "; ".join(problems)
        )
    return dictionary


async def download_dictionary(channel: RequestChannel) -> tuple[bytes, int]:
    """The dictionary's bytes, and the link's resync count after the first answer (a
    resync before it is just the sequence being adopted, e.g. after a host restart)."""
    first = await channel.identify(0, CHUNK)
    epoch = channel.link.counters.seq_resyncs
    data = bytearray(first)
    offset = len(first)
    done = len(first) < CHUNK
    while not done:
        if offset > MAX_DICTIONARY_BYTES:
            raise McuDictionaryError(f"the MCU's dictionary exceeds {MAX_DICTIONARY_BYTES} bytes")
        offsets = [offset + i * CHUNK for i in range(BATCH)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(channel.identify(at, CHUNK)) for at in offsets]
        except ExceptionGroup as failed:  # the first chunk's failure is the one to tell
            raise _first(failed) from None
        for task in tasks:
            chunk = task.result()
            data += chunk
            offset += len(chunk)
            if len(chunk) < CHUNK:
                done = True
                break
    return bytes(data), epoch


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _config_state(
    channel: RequestChannel, name: str, args: dict[str, int] | None = None
) -> ConfigState:
    return ConfigState.from_args(await channel.request(name, "config_state", args))


async def configure(
    channel: RequestChannel, dictionary: Dictionary, config: McuConfig, boot_id: int
) -> ConfigState:
    """``config_reset``, the configuration, ``finalize_config``: the MCU holds ``config``."""
    wanted = config.crc(dictionary)
    messages = config.encoded(dictionary)
    for attempt in range(CONFIG_TRIES):
        reset = await _config_state(channel, "config_reset")
        if reset.boot_id != boot_id:
            raise _DisturbedError
        for message in messages:
            await channel.send(message)
        try:
            state = await _config_state(channel, "finalize_config", {"crc": wanted})
        except McuCommandError as exc:
            # A config message lost to a sequence mix-up (section 2) shows up here.
            if exc.error_code is ErrorCode.CRC_MISMATCH and attempt + 1 < CONFIG_TRIES:
                log.warning("mcu_config_crc_mismatch", port=channel.link.path, crc=wanted)
                continue
            raise McuConfigError(f"the MCU refused the configuration: {exc}") from exc
        if state.boot_id != boot_id:
            raise _DisturbedError
        if not state.is_config or state.crc != wanted:
            raise ProtocolError(
                f"after finalize_config the MCU reports is_config={state.is_config} "
                f"crc={state.crc:#010x}, expected {wanted:#010x}"
            )
        return state
    raise McuConfigError("the MCU kept refusing the configuration")  # pragma: no cover


async def run_connect(
    channel: RequestChannel, config: McuConfig, known_boot_id: int | None
) -> tuple[McuIdentity, Dictionary]:
    """The whole connect sequence; the identity found and the dictionary to speak."""
    link = channel.link
    for _ in range(MAX_PASSES):
        link.configure(window=IDENTIFY_WINDOW)
        raw, epoch = await download_dictionary(channel)
        dictionary = check_dictionary(raw)
        channel.dictionary = dictionary
        link.configure(window=dictionary.window, max_frame=dictionary.max_frame)
        try:
            state = await _config_state(channel, "get_config")
            wanted = config.crc(dictionary)
            resumed = (
                state.is_config and state.crc == wanted and known_boot_id in (None, state.boot_id)
            )
            if not resumed:
                await configure(channel, dictionary, config, state.boot_id)
        except _DisturbedError:
            continue
        if link.counters.seq_resyncs != epoch:
            continue
        identity = McuIdentity(
            build=dictionary.build,
            version=dictionary.version,
            boot_id=state.boot_id,
            resumed=resumed,
            config_crc=wanted,
            window=dictionary.window,
        )
        return identity, dictionary
    raise ProtocolError(f"the MCU on {link.path} kept resetting during the connect sequence")
