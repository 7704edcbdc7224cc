"""De-duplication of the MCU's events (PROTOCOL.md section 5, ``get_event``).

An event reaches the host up to twice: pushed as it happens (``tag = 0``, fast but not
retransmitted) and through ``get_event`` (complete but polled). Ids count from 1 at each
boot, so an event is identified by ``(boot_id, id)``. The tracker keeps a *cursor*, the
highest id such that every id up to it was delivered or is known lost, plus the ids above
it already delivered (pushes that overtook a lost one); ``get_event(after=cursor)`` then
fetches exactly what is missing. When the MCU answers with an id beyond ``after + 1``, its
ring dropped the ids in between: those not delivered are counted lost.

:class:`EventFeed` puts the tracker to work for the client: pushes, polls, the callback.

The MCU keeps its ring across host restarts, and ``get_event`` is the only acknowledgement
it knows: the host's cursor. A host that starts from cursor 0 gets every event of the boot
again, so the owner may hand ``resume``: for a boot, the ids it already holds durably (its
cursor and the ids above it), and the tracker starts from there instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog

from smartpole.drivers.errors import DriverError
from smartpole.drivers.mcu.results import Args, McuEvent

log = structlog.get_logger(__name__)


class EventTracker:
    """Which events of the current boot were delivered; pure, no I/O."""

    def __init__(self) -> None:
        self.boot_id: int | None = None
        self.cursor = 0
        self._above: set[int] = set()
        self.delivered = 0
        self.duplicates = 0
        self.lost = 0

    def set_boot(self, boot_id: int, cursor: int = 0, taken: Iterable[int] = ()) -> None:
        """Events belong to ``boot_id`` from now on; a new boot starts again from id 1, or
        after ``cursor`` and without ``taken`` (ids above it), the owner's record of what
        it already has of that boot."""
        if boot_id != self.boot_id:
            self.boot_id = boot_id
            self.cursor = max(0, cursor)
            self._above = {i for i in taken if i > self.cursor}
            while self.cursor + 1 in self._above:
                self.cursor += 1
                self._above.discard(self.cursor)

    def behind(self, last_event: int) -> bool:
        """Whether the MCU holds events not delivered yet (``status.last_event``), or a
        push overtook an event that is still missing."""
        return last_event > self.cursor or bool(self._above)

    def pushed(self, args: Args) -> McuEvent | None:
        """A pushed event: the event if new, None if already delivered."""
        return self._offer(args, pushed=True)

    def polled(self, after: int, args: Args) -> McuEvent | None:
        """``get_event(after)``'s answer (id != 0): the event if new; ids the ring dropped
        between ``after`` and it are counted lost."""
        event_id = _id(args)
        gap_start = max(after, self.cursor) + 1
        if event_id > gap_start:
            delivered_in_gap = sum(1 for i in self._above if gap_start <= i < event_id)
            self.lost += event_id - gap_start - delivered_in_gap
            self._above = {i for i in self._above if i >= event_id}
            self.cursor = event_id - 1
        return self._offer(args, pushed=False)

    def _offer(self, args: Args, *, pushed: bool) -> McuEvent | None:
        event_id = _id(args)
        if event_id == 0 or self.boot_id is None:
            return None
        if event_id <= self.cursor or event_id in self._above:
            self.duplicates += 1
            return None
        self._above.add(event_id)
        while self.cursor + 1 in self._above:
            self.cursor += 1
            self._above.discard(self.cursor)
        self.delivered += 1
        return McuEvent.from_args(self.boot_id, args, pushed=pushed)


def _id(args: Args) -> int:
    value = args["id"]
    assert isinstance(value, int)
    return value


Fetch = Callable[[int, float | None], Awaitable[Args]]
# For a boot_id: the highest id such that the owner holds every id up to it, and the ids
# above it that it holds too.
Resume = Callable[[int], tuple[int, Iterable[int]]]


class EventFeed:
    """Hands every new event to ``on_event`` once: pushes as they arrive, ``get_event``
    (through ``fetch(after, timeout_s)``) for what they missed. With a callback, a poll
    runs in the background whenever a push or a ``status`` shows events are missing.
    Pushes are ignored while stopped (the client is reconnecting): the poll after the
    next :meth:`start` finds them."""

    def __init__(
        self,
        path: str,
        fetch: Fetch,
        on_event: Callable[[McuEvent], None] | None,
        resume: Resume | None = None,
    ):
        self.path = path
        self._resume = resume
        self.tracker = EventTracker()
        self._fetch = fetch
        self._on_event = on_event
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._again = False
        self._active = False

    def start(self, boot_id: int) -> None:
        """Connected to ``boot_id``: take pushes, and catch up in the background (from what
        the owner already holds of that boot, when it says)."""
        if boot_id != self.tracker.boot_id:
            cursor, taken = self._resume(boot_id) if self._resume is not None else (0, ())
            self.tracker.set_boot(boot_id, cursor, taken)
        self._active = True
        self.kick()

    def stop(self) -> None:
        self._active = False

    async def aclose(self) -> None:
        self._active = False
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.wait({poller})

    def pushed(self, args: Args) -> None:
        if not self._active:
            return
        event = self.tracker.pushed(args)
        if event is not None:
            self._deliver(event)
        if self.tracker.behind(0):
            self.kick()

    def status(self, last_event: int) -> None:
        if self.tracker.behind(last_event):
            self.kick()

    async def poll(self, timeout_s: float | None = None) -> list[McuEvent]:
        """``get_event`` from the cursor until the MCU has nothing newer; the new events."""
        found: list[McuEvent] = []
        async with self._lock:
            while True:
                boot_id, after = self.tracker.boot_id, self.tracker.cursor
                args = await self._fetch(after, timeout_s)
                if args.get("id") == 0 or self.tracker.boot_id != boot_id:
                    return found
                event = self.tracker.polled(after, args)
                if event is not None:
                    found.append(event)
                    self._deliver(event)

    def kick(self) -> None:
        """With a callback, fetch missing events in the background (once at a time)."""
        if self._on_event is None or not self._active:
            return
        if self._poller is not None and not self._poller.done():
            self._again = True
            return
        self._poller = asyncio.get_running_loop().create_task(
            self._poll_in_background(), name=f"mcu-events {self.path}"
        )

    async def _poll_in_background(self) -> None:
        self._again = True
        while self._again and self._active:
            self._again = False
            try:
                await self.poll()
            except DriverError as exc:  # a reset or a silent MCU: the next status retries
                log.debug("mcu_event_poll_failed", port=self.path, error=str(exc))
                return

    def _deliver(self, event: McuEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # the owner's bug must not kill the port's reader callback
            log.exception("mcu_event_callback_failed", port=self.path, event_id=event.id)
