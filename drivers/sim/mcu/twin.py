"""A deterministic Python twin of the pole MCU (PROTOCOL.md sections 2-7).

The twin is the MCU's firmware with the hardware cut off: bytes in (``receive``), time
passing (``tick``), sensor values in (``inputs``), bytes out (the return values) and the
outputs it would drive (``outputs``). It has no I/O, no asyncio and no clock of its own, so
the same calls always give the same bytes. That makes it three things at once: the engine
of the pty emulator, a reference the host driver is tested against, and the generator of
the session vectors the C implementation in ``firmware-bridge/c`` must reproduce byte for
byte. This module is the protocol side (frames, sequence numbers, argument checks,
answers); the pole logic is in ``twin_logic``. Where PROTOCOL.md leaves a choice open the
twin takes the most literal reading; firmware-bridge/vectors/README.md lists them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Final

from smartpole.drivers.mcu.codes import (
    HEARTBEAT_MS_RANGE,
    IDENTIFY_MAX_COUNT,
    LEASE_MS_RANGE,
    MAX_DURATION_MS_RANGE,
    MAX_LEVEL,
    MINUTES_PER_DAY,
    RELAY_COUNT,
    SCHEDULE_STEPS,
    ErrorCode,
    EventKind,
    StatusFlag,
)
from smartpole.drivers.mcu.dictionary import DICTIONARY, DICTIONARY_BYTES
from smartpole.drivers.mcu.frame import SEQ_MODULO, Frame, FrameDecoder, encode_frame
from smartpole.drivers.mcu.msgproto import (
    Dictionary,
    DictionaryError,
    Message,
    UnknownMessageError,
)
from smartpole.drivers.sim.mcu.twin_logic import PoleLogic
from smartpole.drivers.sim.mcu.twin_state import U32_MASK, Event, Inputs, McuConfig, Outputs, Stats

_LIMITS: Final = {
    "heartbeat_ms": HEARTBEAT_MS_RANGE,
    "lease_ms": LEASE_MS_RANGE,
    "max_duration_ms": MAX_DURATION_MS_RANGE,
    "channel": (1, RELAY_COUNT),
    "level": (0, MAX_LEVEL),
    "minute": (0, MINUTES_PER_DAY - 1),
    "index": (0, SCHEDULE_STEPS - 1),
}
"""Section 7's limits by argument name; an argument not listed has none."""


class _RefusedError(Exception):
    """A command is answered with ``error`` (internal to the twin's dispatch)."""

    def __init__(self, tag: int, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.tag = tag
        self.code = code


def _ints(message: Message) -> dict[str, int]:
    return {name: value for name, value in message.args.items() if isinstance(value, int)}


def _check_limits(args: dict[str, int], tag: int) -> None:
    for name, value in args.items():
        low, high = _LIMITS.get(name, (0, U32_MASK))
        if not low <= value <= high:
            raise _RefusedError(tag, ErrorCode.BAD_ARGUMENT)


class McuTwin:
    """The MCU: feed it host bytes and ticks, read back the bytes it transmits.

    ``now_ms`` is the MCU's millisecond clock since boot (``uptime_ms`` is ``now_ms``);
    callers must not let it go backwards. The boot event is pushed by the first
    ``receive`` or ``tick``, as the MCU transmits it right after reset.
    """

    def __init__(self, boot_id: int, *, dictionary: bytes = DICTIONARY_BYTES) -> None:
        self.boot_id = boot_id & U32_MASK
        self.dictionary_bytes = bytes(dictionary)
        # A dictionary this host cannot parse (e.g. version 2, to test the host's refusal)
        # is still served as given; the twin itself then speaks the canonical ids.
        try:
            self._dict = Dictionary.parse(self.dictionary_bytes)
        except DictionaryError:
            self._dict = DICTIONARY
        self._decoder = FrameDecoder(from_mcu=False)
        self._expected = 0
        self._naks = 0
        self._bad_messages = 0
        self._out: list[bytes] = []
        self._logic = PoleLogic(self._push)
        self._handlers: dict[str, Callable[[dict[str, int], Message], None]] = {
            "identify": self._identify,
            "get_config": lambda a, _: self._config_state(a["tag"]),
            "config_reset": self._config_reset,
            "config_relay": self._config_relay,
            "config_fallback": self._config_fallback,
            "config_schedule": self._config_schedule,
            "config_leakage": self._config_leakage,
            "config_alarms": self._config_alarms,
            "finalize_config": self._finalize_config,
            "heartbeat": self._heartbeat,
            "set_relay": self._set_relay,
            "set_level": self._set_level,
            "get_inputs": self._get_inputs,
            "get_event": self._get_event,
            "clear_trip": self._clear_trip,
            "get_stats": self._get_stats,
        }
        self._logic.event(EventKind.BOOT, 0)

    # --- observation ---------------------------------------------------------------------

    @property
    def inputs(self) -> Inputs:
        """The sensor values the MCU reads; mutate them freely between calls."""
        return self._logic.inputs

    @inputs.setter
    def inputs(self, value: Inputs) -> None:
        self._logic.inputs = value

    @property
    def outputs(self) -> Outputs:
        """What the MCU drives now."""
        logic = self._logic
        return Outputs(
            level=logic.level,
            relays=logic.relays,
            source=logic.source,
            fallback=logic.fallback,
            tripped=logic.tripped,
            configured=logic.configured,
            config_crc=logic.crc,
        )

    @property
    def stats(self) -> Stats:
        """The counters ``get_stats`` reports."""
        return Stats(
            rx_frames=self._decoder.frames,
            rx_errors=self._decoder.discards + self._decoder.idle_drops,
            naks=self._naks,
            bad_messages=self._bad_messages,
            events_lost=self._logic.ring.lost,
        )

    def heartbeat_watch(self) -> dict[str, int]:
        """The longest gap between two heartbeats of a configured MCU, and how often it
        fell back: what a rig checks to prove the host kept its deadline."""
        logic = self._logic
        return {"max_gap_ms": logic.max_heartbeat_gap_ms, "fallbacks": logic.fallbacks}

    @property
    def expected(self) -> int:
        """The next host sequence number the MCU accepts."""
        return self._expected

    @property
    def last_event(self) -> int:
        """The id of the newest event."""
        return self._logic.ring.last_id

    @property
    def active_config(self) -> McuConfig:
        """A copy of the configuration in force (boot defaults while unconfigured)."""
        return self._logic.active.copy()

    # --- the two entry points --------------------------------------------------------------

    def receive(self, data: bytes, now_ms: int) -> bytes:
        """Take bytes from the host (any chunking); return every byte sent in response."""
        self._logic.now_ms = now_ms
        tx = self._flush()
        for frame in self._decoder.feed(data, now_ms):
            tx += self._handle_frame(frame)
        return tx

    def tick(self, now_ms: int) -> bytes:
        """Run the periodic logic of section 6 at ``now_ms``; return the bytes pushed."""
        self._logic.now_ms = now_ms
        self._decoder.check_idle(now_ms)
        self._logic.tick()
        return self._flush()

    # --- frames ----------------------------------------------------------------------------

    def _flush(self) -> bytes:
        """One frame per pending message, each acknowledging up to ``expected``."""
        tx = b"".join(encode_frame(self._expected, payload) for payload in self._out)
        self._out.clear()
        return tx

    def _handle_frame(self, frame: Frame) -> bytes:
        if frame.seq != self._expected:
            self._naks += 1
            return encode_frame(self._expected, b"", nak=True)
        self._expected = (self._expected + 1) % SEQ_MODULO
        messages, error = self._dict.decode_partial(frame.payload, from_mcu=False)
        for message in messages:
            handler = self._handlers.get(message.name)
            try:
                if handler is None:
                    self._bad_messages += 1  # declared, but not a command this MCU runs
                    raise _RefusedError(0, ErrorCode.UNKNOWN_COMMAND)
                handler(_ints(message), message)
            except _RefusedError as refused:
                self._reply("error", tag=refused.tag, code=refused.code)
        if error is not None:
            self._bad_messages += 1
            unknown = isinstance(error, UnknownMessageError)
            code = ErrorCode.UNKNOWN_COMMAND if unknown else ErrorCode.MALFORMED
            self._reply("error", tag=0, code=code)
        if not self._out:
            return encode_frame(self._expected, b"")
        return self._flush()

    def _reply(self, name: str, **args: int | bytes) -> None:
        self._out.append(self._dict.encode(name, **args))

    def _push(self, event: Event) -> None:
        self._reply(
            "event",
            tag=0,
            id=event.id,
            kind=event.kind,
            value=event.value,
            uptime_ms=event.uptime_ms,
            unix_time=event.unix_time,
        )

    def _status(self, tag: int) -> None:
        logic = self._logic
        flags = StatusFlag(0)
        for on, flag in (
            (logic.configured, StatusFlag.CONFIGURED),
            (logic.fallback, StatusFlag.FALLBACK),
            (logic.clock.valid, StatusFlag.CLOCK_VALID),
            (logic.tripped, StatusFlag.TRIPPED),
        ):
            if on:
                flags |= flag
        self._reply(
            "status",
            tag=tag,
            flags=int(flags),
            config_crc=logic.crc,
            boot_id=self.boot_id,
            uptime_ms=logic.uptime_ms,
            last_event=logic.ring.last_id,
            level=logic.level,
            relays=logic.relays,
        )

    def _config_state(self, tag: int) -> None:
        logic = self._logic
        self._reply(
            "config_state",
            tag=tag,
            is_config=int(logic.configured),
            crc=logic.crc,
            boot_id=self.boot_id,
        )

    # --- identify and configuration (sections 3 and 4) -------------------------------------

    def _identify(self, args: dict[str, int], message: Message) -> None:
        if not 1 <= args["count"] <= IDENTIFY_MAX_COUNT:
            raise _RefusedError(0, ErrorCode.BAD_ARGUMENT)
        data = self.dictionary_bytes[args["offset"] : args["offset"] + args["count"]]
        self._reply("identify_response", offset=args["offset"], data=data)

    def _config_reset(self, args: dict[str, int], message: Message) -> None:
        self._logic.config_reset()
        self._config_state(args["tag"])

    def _stage(self, args: dict[str, int], message: Message) -> McuConfig:
        """Checks shared by the ``config_*`` setters; counts the message into the CRC."""
        if self._logic.configured:
            raise _RefusedError(0, ErrorCode.ALREADY_CONFIGURED)
        _check_limits(args, 0)
        encoded = self._dict.format(message.name).encode_args(message.args)
        self._logic.crc = zlib.crc32(encoded, self._logic.crc)
        return self._logic.staged

    def _config_relay(self, args: dict[str, int], message: Message) -> None:
        relay = self._stage(args, message).relays[args["channel"] - 1]
        relay.default_on = args["default_on"] != 0
        relay.max_duration_ms = args["max_duration_ms"]

    def _config_fallback(self, args: dict[str, int], message: Message) -> None:
        config = self._stage(args, message)
        config.heartbeat_ms = args["heartbeat_ms"]
        config.fallback_level = args["level"]
        config.lease_ms = args["lease_ms"]

    def _config_schedule(self, args: dict[str, int], message: Message) -> None:
        config = self._stage(args, message)
        config.schedule[args["index"]] = (args["minute"], args["level"])

    def _config_leakage(self, args: dict[str, int], message: Message) -> None:
        config = self._stage(args, message)
        config.trip_ua, config.trip_mask = args["trip_ua"], args["relay_mask"]

    def _config_alarms(self, args: dict[str, int], message: Message) -> None:
        config = self._stage(args, message)
        config.tilt_cdeg, config.impact_mg = args["tilt_cdeg"], args["impact_mg"]

    def _finalize_config(self, args: dict[str, int], message: Message) -> None:
        if args["crc"] != self._logic.crc:
            raise _RefusedError(args["tag"], ErrorCode.CRC_MISMATCH)
        self._logic.finalize()
        self._config_state(args["tag"])

    # --- runtime commands (section 5) ------------------------------------------------------

    def _heartbeat(self, args: dict[str, int], message: Message) -> None:
        self._logic.heartbeat(args["unix_time"], args["utc_offset_min"])
        self._status(args["tag"])

    def _require_control(self, args: dict[str, int]) -> None:
        """set_relay / set_level: configured, heartbeat alive, then the argument limits."""
        if not self._logic.configured:
            raise _RefusedError(args["tag"], ErrorCode.NOT_CONFIGURED)
        if self._logic.fallback:
            raise _RefusedError(args["tag"], ErrorCode.FALLBACK_ACTIVE)
        _check_limits({k: v for k, v in args.items() if k != "tag"}, args["tag"])

    def _set_relay(self, args: dict[str, int], message: Message) -> None:
        self._require_control(args)
        self._logic.set_relay(args["channel"] - 1, args["on"] != 0)
        logic = self._logic
        self._reply("relay_state", tag=args["tag"], relays=logic.relays, tripped=int(logic.tripped))

    def _set_level(self, args: dict[str, int], message: Message) -> None:
        self._require_control(args)
        self._logic.set_level(args["level"])
        logic = self._logic
        self._reply("level_state", tag=args["tag"], level=logic.level, source=logic.source)

    def _get_inputs(self, args: dict[str, int], message: Message) -> None:
        i = self._logic.inputs
        self._reply(
            "inputs",
            tag=args["tag"],
            door=i.door,
            water=i.water,
            photocell=i.photocell,
            tilt_x=i.tilt_x,
            tilt_y=i.tilt_y,
            leakage_ua=i.leakage_ua,
            temp_cdeg=i.temp_cdeg,
            supply_mv=i.supply_mv,
            uptime_ms=self._logic.uptime_ms,
        )

    def _get_event(self, args: dict[str, int], message: Message) -> None:
        event = self._logic.ring.after(args["after"]) or Event(0, 0, 0, 0, 0)
        self._reply(
            "event",
            tag=args["tag"],
            id=event.id,
            kind=event.kind,
            value=event.value,
            uptime_ms=event.uptime_ms,
            unix_time=event.unix_time,
        )

    def _clear_trip(self, args: dict[str, int], message: Message) -> None:
        if not self._logic.clear_trip():
            raise _RefusedError(args["tag"], ErrorCode.TRIPPED)
        self._status(args["tag"])

    def _get_stats(self, args: dict[str, int], message: Message) -> None:
        stats = self.stats
        self._reply(
            "stats",
            tag=args["tag"],
            rx_frames=stats.rx_frames & U32_MASK,
            rx_errors=stats.rx_errors & U32_MASK,
            naks=stats.naks & U32_MASK,
            bad_messages=stats.bad_messages & U32_MASK,
            events_lost=stats.events_lost & U32_MASK,
        )
