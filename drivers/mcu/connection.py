"""The connection under :class:`~smartpole.drivers.mcu.client.McuClient`: its life cycle.

Open, connect (:mod:`.connect`), the gate requests wait at while a connect is in progress,
and reset detection (a ``boot_id`` change in a ``status`` / ``config_state``, a sequence
resync, or ``not_configured`` from an MCU we configured): what was in flight fails with
:class:`~smartpole.drivers.mcu.errors.McuResetError`, and so does every request until the
owner connects again. The connection never reconnects by itself: its owner (the agent's
bus task, ``agent/buses/supervised.py``) is the one place that decides when to retry, so
a reset, a silent MCU and a lost port all go through one backoff and one health record.
The typed requests are the client's; this module has the one ``_request`` they all go
through.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import replace
from typing import Final, Self

import structlog

from smartpole.drivers.errors import DeviceTimeoutError, DriverError, TransportError
from smartpole.drivers.lifecycle import AsyncClosing
from smartpole.drivers.line import wire_time_s
from smartpole.drivers.mcu.codes import ErrorCode
from smartpole.drivers.mcu.config import McuConfig
from smartpole.drivers.mcu.connect import run_connect
from smartpole.drivers.mcu.errors import (
    McuCommandError,
    McuDictionaryError,
    McuResetError,
    McuVersionError,
)
from smartpole.drivers.mcu.events import EventFeed, Resume
from smartpole.drivers.mcu.frame import MAX_FRAME
from smartpole.drivers.mcu.link import DEFAULT_BAUDRATE, McuLink
from smartpole.drivers.mcu.msgproto import Dictionary, Message
from smartpole.drivers.mcu.requests import RequestChannel
from smartpole.drivers.mcu.results import (
    Args,
    McuClientStats,
    McuEvent,
    McuIdentity,
    McuStatus,
)

log = structlog.get_logger(__name__)

_BOOT_ID_ANSWERS: Final = frozenset({"status", "config_state"})
ANSWER_FRAMES: Final = 8


def default_answer_timeout_s(baudrate: int) -> float:
    """How long after the MCU acknowledged a request its answer may still come: the answers
    to the other messages packed in the same frame go first, each in a frame of its own."""
    return max(0.02, ANSWER_FRAMES * wire_time_s(MAX_FRAME, baudrate))


class _State(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RESET = "reset"  # the MCU reset under us: requests fail until the owner connects again
    CLOSED = "closed"


class McuConnection(AsyncClosing):
    """One MCU on one serial port, kept connected and configured with ``config``.

    ``request_timeout_s`` bounds each request (and each identify chunk) as a whole; within
    it the link retransmits the request until acknowledged, and an answer missing
    ``answer_timeout_s`` after the acknowledgement (default: eight 64-byte frames of wire
    time, at least 20 ms) is asked for again with a new tag, up to ``attempts`` times.
    Requests wait up to ``ready_timeout_s`` (or their own ``timeout_s``) for a connect in
    progress. ``boot_id`` is the MCU boot the host last configured, if it remembers one (a
    different boot is reconfigured). ``on_event`` gets every new event once, on the loop;
    it must not block. ``event_resume`` says, for a boot, which of its events the owner
    already holds (see :mod:`.events`), so they are not fetched and handed on again.
    """

    def __init__(
        self,
        path: str,
        config: McuConfig,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        exclusive: bool = True,
        request_timeout_s: float = 1.0,
        answer_timeout_s: float | None = None,
        attempts: int = 5,
        ready_timeout_s: float = 5.0,
        boot_id: int | None = None,
        on_event: Callable[[McuEvent], None] | None = None,
        event_resume: Resume | None = None,
    ) -> None:
        if ready_timeout_s <= 0:
            raise ValueError("bad timing settings for McuClient")
        self.path = path
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self._boot_id = boot_id
        self._stats = McuClientStats()
        self._link = McuLink(
            path,
            baudrate=baudrate,
            exclusive=exclusive,
            on_resync=self._on_resync,
            on_failure=self._on_link_failure,
        )
        self._channel = RequestChannel(
            self._link,
            timeout_s=request_timeout_s,
            answer_timeout_s=answer_timeout_s or default_answer_timeout_s(baudrate),
            attempts=attempts,
            observe=self._observe,
            on_re_request=self._count_re_request,
        )
        self._link.on_payload = self._channel.on_payload
        self._events = EventFeed(path, self._fetch_event, on_event, event_resume)
        self._state = _State.DISCONNECTED
        self._ready = asyncio.Event()
        self._failure: TransportError | None = None
        self._identity: McuIdentity | None = None
        self._connect_lock = asyncio.Lock()

    # ----- life cycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.open()
        try:
            await self.connect()
        except BaseException:
            await self.aclose()
            raise
        return self

    def open(self) -> None:
        """Open the port (TransportError if unusable); ``connect()`` comes next."""
        self._link.open()
        self._failure = None
        self._state = _State.DISCONNECTED

    async def aclose(self) -> None:
        """Stop the background tasks and close the port; waiting requests fail with
        TransportError. Safe to call twice."""
        self._state = _State.CLOSED
        await self._events.aclose()
        self._channel.fail_all(TransportError(f"MCU client on {self.path} was closed"))
        self._ready.set()  # wakes requests waiting for a connect; they see CLOSED
        await self._link.aclose()

    async def connect(self) -> McuIdentity:
        """Run the connect sequence once: identify, check the dictionary and the config
        CRC, configure if needed. McuVersionError / McuDictionaryError for an MCU this
        host cannot speak to, DeviceTimeoutError for a silent one (all counted)."""
        async with self._connect_lock:
            return await self._connect_once()

    async def wait_connected(self, timeout_s: float | None = None) -> McuIdentity:
        """Until the client is connected (by a ``connect()`` another task runs)."""
        await self._wait_ready(timeout_s)
        assert self._identity is not None
        return self._identity

    # ----- what the owner sees ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._state is _State.CONNECTED

    @property
    def identity(self) -> McuIdentity | None:
        """The identity found by the last successful connect."""
        return self._identity

    @property
    def dictionary(self) -> Dictionary | None:
        return self._channel.dictionary

    @property
    def stats(self) -> McuClientStats:
        """A snapshot of the client's counters and the link's."""
        events = self._events.tracker
        return replace(
            self._stats,
            link=self._link.stats,
            events_delivered=events.delivered,
            events_duplicate=events.duplicates,
            events_lost=events.lost,
        )

    async def _fetch_event(self, after: int, timeout_s: float | None) -> Args:
        return await self._request("get_event", "event", {"after": after}, timeout_s)

    async def _request(
        self, name: str, expects: str, args: dict[str, int] | None, timeout_s: float | None
    ) -> Args:
        await self._wait_ready(timeout_s)
        self._stats.requests += 1
        try:
            return await self._channel.request(name, expects, args, timeout_s=timeout_s)
        except McuCommandError as exc:
            self._stats.command_errors += 1
            if exc.error_code is ErrorCode.NOT_CONFIGURED and self.connected:
                # We configured it: it lost its configuration, so it reset (a reset the
                # sequence numbers happened not to show, and no status has told yet).
                self._reset_detected("the MCU says it is not configured")
                raise McuResetError(f"MCU on {self.path} reset: {exc}") from exc
            raise

    async def _wait_ready(self, timeout_s: float | None) -> None:
        limit = self.ready_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit):
                while not self.connected:
                    self._raise_if_unusable()
                    await self._ready.wait()
                    if not self.connected:
                        self._ready.clear()
        except TimeoutError:
            raise DeviceTimeoutError(
                f"MCU on {self.path} is not connected ({self._state.value}) after {limit} s"
            ) from None

    def _raise_if_unusable(self) -> None:
        if self._failure is not None:
            raise TransportError(str(self._failure)) from self._failure
        if self._state is _State.CLOSED:
            raise TransportError(f"MCU client on {self.path} is closed")
        if self._state is _State.RESET:
            raise McuResetError(f"MCU on {self.path} reset; it must be connected again")

    # ----- connecting ---------------------------------------------------------------------

    async def _connect_once(self) -> McuIdentity:
        if self._state is _State.RESET:
            self._state = _State.DISCONNECTED  # connecting again is what a reset asks for
        self._raise_if_unusable()
        self._state = _State.CONNECTING
        self._ready.clear()
        self._events.stop()
        try:
            identity, _ = await run_connect(self._channel, self.config, self._boot_id)
        except DriverError as exc:
            self._stats.connect_failures += 1
            if isinstance(exc, McuVersionError):
                self._stats.version_refusals += 1
            elif isinstance(exc, McuDictionaryError):
                self._stats.dictionary_refusals += 1
            if self._state is _State.CONNECTING:
                self._state = _State.DISCONNECTED
            raise
        except BaseException:
            if self._state is _State.CONNECTING:
                self._state = _State.DISCONNECTED
            raise
        self._boot_id = identity.boot_id
        if self._identity is not None:
            self._stats.reconnects += 1
        self._identity = identity
        self._stats.connects += 1
        if identity.resumed:
            self._stats.resumes += 1
        else:
            self._stats.reconfigures += 1
        self._state = _State.CONNECTED
        self._ready.set()
        log.info(
            "mcu_connected",
            port=self.path,
            build=identity.build,
            boot_id=f"{identity.boot_id:#010x}",
            resumed=identity.resumed,
            config_crc=f"{identity.config_crc:#010x}",
        )
        self._events.start(identity.boot_id)
        return identity

    def _reset_detected(self, reason: str) -> None:
        """The MCU reset under a connected client: fail what is in flight and every request
        after it, until the owner connects again (and reconfigures the MCU)."""
        if self._state is not _State.CONNECTED:
            return  # a connect in progress notices by itself
        self._stats.resets_detected += 1
        log.warning("mcu_reset_detected", port=self.path, reason=reason)
        self._state = _State.RESET
        self._events.stop()
        self._ready.set()  # wakes requests waiting for a connect; they see the reset
        self._channel.fail_all(McuResetError(f"MCU on {self.path} reset ({reason})"))

    def _on_resync(self) -> None:
        self._reset_detected("sequence resync")

    def _on_link_failure(self, failure: TransportError) -> None:
        self._failure = failure
        self._state = _State.DISCONNECTED
        self._events.stop()
        self._channel.fail_all(failure)
        self._ready.set()

    def _count_re_request(self) -> None:
        self._stats.re_requests += 1

    # ----- messages and events ------------------------------------------------------------

    def _observe(self, message: Message) -> bool:
        """Every decoded message before it is matched: True if it was taken here."""
        args = message.args
        if message.name in _BOOT_ID_ANSWERS and self._state is _State.CONNECTED:
            boot_id = args.get("boot_id")
            if boot_id != self._boot_id:
                self._reset_detected(f"boot_id {self._boot_id} became {boot_id!r}")
                return True
        if args.get("tag") != 0:
            return False
        if message.name == "event":
            self._events.pushed(args)
            return True
        if message.name == "error":
            self._stats.mcu_errors += 1
            log.warning("mcu_reported_error", port=self.path, code=args.get("code"))
            return True
        return False

    def _after_status(self, status: McuStatus) -> None:
        self._events.status(status.last_event)
