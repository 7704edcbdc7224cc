"""Requests and answers over the link: tags, timeouts, re-requests (PROTOCOL.md section 2).

The MCU never retransmits an answer, so a request that gets none in time is sent again with
a *new* tag (commands are idempotent); an answer whose tag nobody waits for any more is
stale and dropped. ``identify`` has no tag: its answers are matched by ``offset``. Every
decoded message is first shown to the owner (``observe``), which takes pushes and watches
for a reset; what it leaves is matched to a waiting request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog

from smartpole.drivers.errors import (
    CodecError,
    DeviceTimeoutError,
    DriverError,
    ProtocolError,
    TransportError,
)
from smartpole.drivers.mcu.errors import McuCommandError
from smartpole.drivers.mcu.link import McuLink
from smartpole.drivers.mcu.msgproto import (
    IDENTIFY,
    IDENTIFY_RESPONSE,
    Dictionary,
    Message,
    decode_with,
)
from smartpole.drivers.mcu.results import Args

log = structlog.get_logger(__name__)

MAX_TAG: Final = 255
# A tag given up on is not reused for this long, so its late answer (say behind a slow
# line) cannot be taken for the answer to a newer request.
TAG_QUARANTINE_S: Final = 2.0
_FIXED_BY_ID: Final = {IDENTIFY_RESPONSE.id: IDENTIFY_RESPONSE}
_T = TypeVar("_T")


@dataclass
class _Pending:
    name: str
    expects: str
    answer: asyncio.Future[Args]


class RequestChannel:
    """Matches answers to requests for one link; ``dictionary`` is set by the connect."""

    def __init__(
        self,
        link: McuLink,
        *,
        timeout_s: float,
        answer_timeout_s: float,
        attempts: int,
        observe: Callable[[Message], bool],
        on_re_request: Callable[[], None],
    ) -> None:
        if timeout_s <= 0 or answer_timeout_s <= 0 or attempts < 1:
            raise ValueError(
                f"bad request settings: timeout_s={timeout_s} "
                f"answer_timeout_s={answer_timeout_s} attempts={attempts}"
            )
        self.link = link
        self.timeout_s = timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.attempts = attempts
        self.dictionary: Dictionary | None = None
        self._observe = observe
        self._on_re_request = on_re_request
        self._pending: dict[int, _Pending] = {}
        self._identify: dict[int, list[asyncio.Future[bytes]]] = {}
        self._quarantine: dict[int, float] = {}
        self._next_tag = 1
        self._silent = False

    # ----- requests -----------------------------------------------------------------------

    async def request(
        self,
        name: str,
        expects: str,
        args: Mapping[str, int] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Args:
        """Send ``name`` with a fresh tag until ``expects`` answers; the answer's arguments.

        The link retransmits the request until the MCU acknowledges it; an answer missing
        ``answer_timeout_s`` after that was lost on the wire, and the request is sent again
        with a new tag (at most ``attempts`` times in all). ``error`` answers raise
        McuCommandError; nothing within ``timeout_s`` in all DeviceTimeoutError."""
        dictionary = self.dictionary
        if dictionary is None:
            raise ProtocolError("the MCU's dictionary is not known yet (not connected)")
        loop = asyncio.get_running_loop()
        limit = timeout_s or self.timeout_s
        tag = 0
        try:
            async with asyncio.timeout(limit):
                for attempt in range(1, self.attempts + 1):
                    tag = self._free_tag(loop.time())
                    try:
                        message = dictionary.encode(name, tag=tag, **(args or {}))
                    except CodecError as exc:
                        raise ValueError(f"bad {name} request: {exc}") from exc
                    entry = _Pending(name, expects, loop.create_future())
                    self._pending[tag] = entry
                    try:
                        answer = await self._answer(entry.answer, await self.link.send(message))
                    finally:
                        if self._pending.get(tag) is entry:
                            del self._pending[tag]
                        _retrieved(entry.answer)
                    if answer is not None:
                        self._answering()
                        return answer
                    self._lost(tag, loop.time(), retry=attempt < self.attempts)
        except TimeoutError:
            self._timed_out(name, tag, loop.time())
            raise DeviceTimeoutError(
                f"MCU on {self.link.path} did not answer {name} within {limit} s"
            ) from None
        raise DeviceTimeoutError(
            f"the answer to {name} from the MCU on {self.link.path} was lost {self.attempts} times"
        )

    async def identify(self, offset: int, count: int) -> bytes:
        """Up to ``count`` bytes of the dictionary from ``offset`` (matched by offset)."""
        loop = asyncio.get_running_loop()
        message = IDENTIFY.encode(offset=offset, count=count)
        try:
            async with asyncio.timeout(self.timeout_s):
                for attempt in range(1, self.attempts + 1):
                    answer: asyncio.Future[bytes] = loop.create_future()
                    waiters = self._identify.setdefault(offset, [])
                    waiters.append(answer)
                    try:
                        data = await self._answer(answer, await self.link.send(message))
                    finally:
                        _retrieved(answer)
                        if answer in waiters:
                            waiters.remove(answer)
                        if not waiters and self._identify.get(offset) is waiters:
                            del self._identify[offset]
                    if data is not None:
                        self._answering()
                        return data
                    self._lost(None, loop.time(), retry=attempt < self.attempts)
        except TimeoutError:
            self._timed_out("identify", None, loop.time())
            raise DeviceTimeoutError(
                f"MCU on {self.link.path} did not answer identify offset={offset} "
                f"within {self.timeout_s} s"
            ) from None
        raise DeviceTimeoutError(
            f"the identify answers from the MCU on {self.link.path} were lost {self.attempts} times"
        )

    async def _answer(self, answer: asyncio.Future[_T], acked: asyncio.Future[bool]) -> _T | None:
        """The answer, or None if it was lost: the MCU acknowledged the request (so it
        processed it) and no answer followed within ``answer_timeout_s``."""
        await asyncio.wait((answer, acked), return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            if not acked.result():
                raise TransportError(f"MCU link on {self.link.path} closed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.answer_timeout_s):
                    await asyncio.wait((answer,))
            if not answer.done():
                return None
        return answer.result()

    async def send(self, message: bytes) -> None:
        """A message without an answer (``config_*``): reliable through the link alone."""
        await self.link.send(message)

    def fail_all(self, error: DriverError) -> None:
        """Every waiting request fails with ``error`` (a reset, the port closing)."""
        pending, identify = self._pending, self._identify
        self._pending, self._identify = {}, {}
        now = asyncio.get_running_loop().time()
        for tag in pending:  # their frames may still reach the MCU and be answered
            self._quarantine[tag] = now
        futures: list[asyncio.Future[Args]] = [entry.answer for entry in pending.values()]
        for future in futures:
            if not future.done():
                future.set_exception(error)
        for waiters in identify.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)

    @property
    def in_flight(self) -> int:
        return len(self._pending) + sum(len(w) for w in self._identify.values())

    def _free_tag(self, now: float) -> int:
        for _ in range(MAX_TAG):
            tag = self._next_tag
            self._next_tag = tag % MAX_TAG + 1
            if tag in self._pending:
                continue
            if now - self._quarantine.get(tag, -TAG_QUARANTINE_S) < TAG_QUARANTINE_S:
                continue
            self._quarantine.pop(tag, None)
            return tag
        raise ProtocolError(f"all {MAX_TAG} request tags are in use on {self.link.path}")

    def _lost(self, tag: int | None, now: float, *, retry: bool) -> None:
        """An answer lost on the wire: its tag rests, the request goes again."""
        if tag is not None:
            self._quarantine[tag] = now
        if retry:
            self._on_re_request()

    def _timed_out(self, name: str, tag: int | None, now: float) -> None:
        self.link.counters.timeouts += 1
        if tag:
            self._quarantine[tag] = now
        if not self._silent:
            self._silent = True
            log.warning("mcu_not_answering", port=self.link.path, request=name)

    def _answering(self) -> None:
        if self._silent:
            self._silent = False
            log.info("mcu_answering_again", port=self.link.path)

    # ----- answers ------------------------------------------------------------------------

    def on_payload(self, payload: bytes) -> None:
        """Every non-empty payload from the MCU (the link's callback)."""
        dictionary = self.dictionary
        if dictionary is None:
            # Before the first identify only identify_response can be understood; anything
            # else is an MCU already talking (a push), not a fault of the line.
            messages, _ = decode_with(_FIXED_BY_ID, payload)
        else:
            messages, error = dictionary.decode_partial(payload, from_mcu=True)
            if error is not None:
                self.link.counters.bad_messages += 1
                log.debug("mcu_bad_message", port=self.link.path, error=str(error))
        for message in messages:
            self._dispatch(message)

    def _dispatch(self, message: Message) -> None:
        if message.name == IDENTIFY_RESPONSE.name:
            self._identify_answer(message.args)
            return
        if self._observe(message):
            return
        tag = message.args.get("tag")
        if not isinstance(tag, int) or (entry := self._pending.get(tag)) is None:
            self.link.counters.stale_answers += 1
            return
        if entry.answer.done():  # its requester was cancelled a moment ago
            self.link.counters.stale_answers += 1
        elif message.name == "error":
            code = message.args.get("code")
            entry.answer.set_exception(
                McuCommandError(entry.name, code if isinstance(code, int) else 0)
            )
        elif message.name == entry.expects:
            entry.answer.set_result(message.args)
        else:  # an answer of another kind under this tag: a stale one from a reused tag
            self.link.counters.stale_answers += 1
            return
        del self._pending[tag]

    def _identify_answer(self, args: Args) -> None:
        offset, data = args.get("offset"), args.get("data")
        waiters = self._identify.pop(offset, []) if isinstance(offset, int) else []
        if not waiters or not isinstance(data, bytes):
            self.link.counters.stale_answers += 1
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(data)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failed answer as seen when its requester leaves without reading it (it was
    cancelled as the failure came): asyncio would otherwise log it as never retrieved."""
    if future.done() and not future.cancelled():
        future.exception()
