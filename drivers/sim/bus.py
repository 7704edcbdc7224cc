"""Simulated devices sharing one endpoint: their faults, their counters, their timing.

Every bus simulator answers requests addressed to devices (a meter's 12 digits, a
camera's or a Modbus unit's number), lets a rig break each device separately while it
runs, counts what it saw in one :class:`SimStats` shape, and delays each answer by what a
real device and the copper would cost, so rigs see realistic poll cycles and a benchmark
can compare the agent against the physical limit. :class:`BusServer` carries that on top
of the endpoint skeleton; a protocol adds its decoding and its answers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import structlog

from smartpole.drivers.line import reply_delay_s
from smartpole.drivers.sim.faults import SLOW_EXTRA_S, FaultMode
from smartpole.drivers.sim.server import SimServer, TcpAddress

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)

# asyncio wakes a timer up to a millisecond late (epoll waits in whole milliseconds, rounded
# up), which on a 9600-baud line is most of a character: the last stretch of an answer's
# delay is slept off the loop, to the microsecond.
_LOOP_GRAIN_S = 0.0015


async def sleep_until(deadline: float) -> None:
    """Return at ``deadline`` (monotonic): an answer leaves when copper would deliver it,
    neither sooner nor a loop tick later. Blocks this simulator's loop for at most
    ``_LOOP_GRAIN_S``: the simulator is a rig's model of the wire, not the agent."""
    coarse = deadline - time.monotonic() - _LOOP_GRAIN_S
    if coarse > 0:
        await asyncio.sleep(coarse)  # emulates the device and the wire, not test sync
    fine = deadline - time.monotonic()
    if fine > 0:
        time.sleep(fine)  # noqa: ASYNC251 - under 1.5 ms: the wire is finer than the loop


@dataclass
class SimStats(Generic[K]):
    """What a simulator saw, for rig assertions and dashboards; ``stats`` gives a copy.

    ``requests`` counts every request taken off the line, whoever it was for (broadcasts
    and absent devices too); ``by_address`` those each simulated device received, faults
    or not; ``ignored`` those a fault left unexecuted and unanswered (or a listening
    device took for another unit's answer); ``answered`` the
    answers that went out. ``bad_frames`` counts corrupt frames or noise bursts,
    ``discarded_bytes`` every byte that was no request. ``collisions`` counts frames two
    devices spoiled by talking at once (a slow device's late answer on an RS-485 pair).
    ``unsolicited`` counts bursts a babbling device sent without being asked. ``by_kind``
    counts executed requests by the protocol's name for them, where it names them
    (Pelco-D commands).
    ``connections`` (every one accepted since start) and ``open_connections`` are for
    TCP simulators.
    """

    requests: int = 0
    answered: int = 0
    ignored: int = 0
    bad_frames: int = 0
    collisions: int = 0
    unsolicited: int = 0
    discarded_bytes: int = 0
    by_address: Counter[K] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    open_connections: int = 0

    def copy(self) -> SimStats[K]:
        """A snapshot that live counting cannot change behind a rig's back."""
        return replace(self, by_address=Counter(self.by_address), by_kind=Counter(self.by_kind))


@dataclass(frozen=True)
class ReplyTiming:
    """How long a device takes to answer: ``turnaround_s`` of its own, plus, on a serial
    line (``baudrate`` set), the wire time of the request's end and of the answer."""

    baudrate: int | None
    turnaround_s: float

    def __post_init__(self) -> None:
        if (self.baudrate is not None and self.baudrate <= 0) or self.turnaround_s < 0:
            raise ValueError(
                f"bad timing: baudrate={self.baudrate} turnaround_s={self.turnaround_s}"
            )

    def delay_s(self, request_len: int, reply_len: int, fault: FaultMode) -> float:
        """From the request's first byte received to the answer's first byte sent; SLOW
        adds ``SLOW_EXTRA_S``."""
        if self.baudrate is None:
            delay = self.turnaround_s
        else:
            delay = reply_delay_s(request_len, reply_len, self.baudrate, self.turnaround_s)
        return delay + (SLOW_EXTRA_S if fault is FaultMode.SLOW else 0.0)


class BusServer(SimServer, Generic[K]):
    """Devices addressed by ``K`` on one endpoint, each with a fault a rig may change.

    ``key`` normalises an address (e.g. zero-padding a meter's digits) wherever one comes
    in. ``seed`` seeds the generator that garbles answers, so a rig's run can be repeated.
    """

    def __init__(
        self,
        name: str,
        *,
        timing: ReplyTiming,
        faults: Mapping[K, FaultMode] | None = None,
        key: Callable[[K], K] | None = None,
        seed: int = 0,
        tcp: TcpAddress | None = None,
        max_pending: int | None = None,
    ) -> None:
        super().__init__(name, tcp=tcp, max_pending=max_pending)
        self.timing = timing
        self._key: Callable[[K], K] = key or _same
        self._faults = {self._key(a): FaultMode(m) for a, m in (faults or {}).items()}
        self._stats: SimStats[K] = SimStats()
        self._rng = random.Random(seed)  # noqa: S311 - line noise, not cryptography

    @property
    def stats(self) -> SimStats[K]:
        """A snapshot, so callers can compare before/after without aliasing live counters."""
        return self._stats.copy()

    def set_fault(self, device: K, mode: FaultMode) -> None:
        """Change a device's behaviour while running; applies from its next request on."""
        device = self._key(device)
        self._faults[device] = FaultMode(mode)
        log.info("sim_fault_set", sim=self.name, device=device, fault=str(mode))

    def fault_of(self, device: K) -> FaultMode:
        return self._faults.get(self._key(device), FaultMode.NONE)

    def spoil(self, reply: bytes, fault: FaultMode, *, checksum: slice) -> bytes:
        """``reply`` as ``fault`` leaves it: BAD_CRC inverts the ``checksum`` bytes, GARBAGE
        and BABBLE send random bytes of its length; any other fault leaves it whole."""
        if fault is FaultMode.BAD_CRC:
            spoiled = bytearray(reply)
            spoiled[checksum] = bytes(b ^ 0xFF for b in reply[checksum])
            return bytes(spoiled)
        if fault in (FaultMode.GARBAGE, FaultMode.BABBLE):
            return self._rng.randbytes(len(reply))
        return reply

    def _stop_fields(self) -> dict[str, object]:
        return {"stats": self._stats}

    def _connection(self, *, opened: bool) -> None:
        if opened:
            self._stats.connections += 1
            self._stats.open_connections += 1
        else:
            self._stats.open_connections -= 1


def _same(device: K) -> K:
    return device
