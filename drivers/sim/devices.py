"""A simulated device: a profile's points held in a register bank, drifting like the real thing.

Values are encoded with the same codec the agent decodes with, so a rig exercises the real
path from registers to points. The drift is a bounded random walk from the profile's
``simulation`` section, seeded so two rig runs see the same sequence.

A master's writes land in the bank like on the device: a rw point reads back what was
written, and the walk goes on from there. Writes a profile redirects with a ``write:``
block (a relay module switches channel 3 by writing ``3 << 8 | 1`` to another register)
are played back onto the point they switch, as :class:`WriteEffects` derives them from the
profile; nothing here knows a device model.

A profile with an ``addressing`` block makes the device hold its own unit id and baud code
in the registers it names, as devices shipped on one address do. A master's write to the
address register asks the server to move the device to the new unit id (``attach`` gives
the bank that hook); a write to the baud register is checked against ``baud_codes`` and
recorded, but a simulated line has no speed, so the device keeps answering as before.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from smartpole.drivers.errors import CodecError
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.pdu import ExceptionCode, RequestRefusedError
from smartpole.drivers.modbus.points import DataType, PointSpec, RegisterKind, WriteEncoding
from smartpole.drivers.modbus.profile import LeaseSpec, ModbusAddressing, ModbusProfile
from smartpole.drivers.schema import Value
from smartpole.drivers.sim.modbus_bank import IllegalAddressError, RegisterBank

Update = tuple[str, Value]  # a point and the value a write gives it
# Asked to move a device from one unit id to another; raises RequestRefusedError to refuse.
Mover = Callable[[int, int], None]
MAX_UNIT_ID = 247  # 248-255 are reserved, 0 is broadcast: no device may take them
SHIPPED_UNIT_ID = 1  # what every such device answers on until someone re-addresses it


@dataclass(frozen=True)
class _ValueTarget:
    point: str
    spec: PointSpec
    kind: RegisterKind
    address: int

    @property
    def end(self) -> int:
        return self.address + self.spec.register_count


class WriteEffects:
    """What writes to a profile's ``write:`` targets do to the points they switch.

    ``channel_byte``: a word ``channel << 8 | state`` written to the target sets the point
    with that channel to ``state`` (0/1); a channel no point has, or another state, is
    refused with exception 3 (illegal data value), as such modules do. ``value``: a write
    that covers the whole target sets the point to the value it encodes.
    """

    def __init__(self, profile: ModbusProfile) -> None:
        self._channels: dict[int, dict[int, str]] = {}  # holding address -> channel -> point
        self._values: list[_ValueTarget] = []
        for name, spec in profile.points.items():
            block = spec.write
            if block is None:
                continue
            if block.encoding is WriteEncoding.CHANNEL_BYTE and block.channel is not None:
                self._channels.setdefault(block.address, {})[block.channel] = name
            elif block.encoding is WriteEncoding.VALUE:
                self._values.append(_ValueTarget(name, spec, spec.kind, block.address))

    def targets(self) -> list[tuple[RegisterKind, int, int]]:
        """Every (kind, address, count) a master writes to: the simulator maps them."""
        out = [(RegisterKind.HOLDING, address, 1) for address in self._channels]
        out += [(t.kind, t.address, t.spec.register_count) for t in self._values]
        return out

    def updates(self, kind: RegisterKind, address: int, values: Sequence[int]) -> list[Update]:
        """The point values a write gives; raises RequestRefusedError for a refused write."""
        updates: list[Update] = []
        if kind is RegisterKind.HOLDING:
            for at, word in enumerate(values, start=address):
                channels = self._channels.get(at)
                if channels is None:
                    continue
                channel, state = word >> 8, word & 0xFF
                if channel not in channels or state not in (0, 1):
                    raise RequestRefusedError(
                        f"register {at}: no channel {channel} or state {state} is not 0/1",
                        ExceptionCode.ILLEGAL_DATA_VALUE,
                    )
                updates.append((channels[channel], bool(state)))
        end = address + len(values)
        for target in self._values:
            if target.kind == kind and address <= target.address and target.end <= end:
                words = values[target.address - address : target.end - address]
                try:
                    updates.append((target.point, codec.decode(target.spec, words)))
                except CodecError as exc:
                    raise RequestRefusedError(str(exc), ExceptionCode.ILLEGAL_DATA_VALUE) from exc
        return updates


class SimulatedBank(RegisterBank):
    """A register bank whose master writes also play the profile's write effects.

    With ``addressing``, the bank also holds the device's unit id and baud code, and a
    write to the address register is passed to the mover that ``attach`` installed.
    """

    def __init__(
        self,
        effects: WriteEffects,
        apply: Callable[[str, Value], None],
        addressing: ModbusAddressing | None = None,
        lease: _Lease | None = None,
    ) -> None:
        super().__init__()
        self._effects = effects
        self._apply = apply
        self._addressing = addressing
        self._mover: Mover | None = None
        self._lease = lease

    def get(self, kind: RegisterKind, address: int, count: int) -> list[int]:
        if self._lease is not None:
            self._lease.expire_if_due()
        return super().get(kind, address, count)

    @property
    def addressing(self) -> ModbusAddressing | None:
        return self._addressing

    @property
    def probe_unit(self) -> int | None:
        """A unit id this device answers besides its own (``addressing.probe_unit``)."""
        return self._addressing.probe_unit if self._addressing is not None else None

    @property
    def unit_id(self) -> int | None:
        """The unit id its address register holds; None for a device without addressing."""
        if self._addressing is None:
            return None
        return self.get(RegisterKind.HOLDING, self._addressing.address_register, 1)[0]

    @property
    def baud_code(self) -> int | None:
        """What its baud register holds; None if it has none."""
        register = self._addressing.baud_register if self._addressing is not None else None
        if register is None:
            return None
        return self.get(RegisterKind.HOLDING, register, 1)[0]

    def map_addressing(self, unit_id: int = SHIPPED_UNIT_ID, baudrate: int | None = None) -> None:
        """Map the addressing registers: the unit id, and the code of ``baudrate`` if the
        profile lists one (else code 0, a placeholder: the simulator has no line speed)."""
        addressing = self._addressing
        if addressing is None:
            return
        self.set(RegisterKind.HOLDING, addressing.address_register, [unit_id])
        if addressing.baud_register is not None:
            codes = addressing.baud_codes.items()
            code = next((code for code, rate in codes if rate == baudrate), 0)
            self.set(RegisterKind.HOLDING, addressing.baud_register, [code])

    def attach(self, unit_id: int, *, baudrate: int | None = None, mover: Mover) -> None:
        """Called by the server that serves this bank on ``unit_id``: hold that id (and the
        baud code of the server's line) and ask ``mover`` when a master changes the id."""
        if self._addressing is None:
            return
        self.map_addressing(unit_id, baudrate)
        self._mover = mover

    def write(self, kind: RegisterKind, address: int, values: Sequence[int]) -> None:
        updates = self._effects.updates(kind, address, values)  # refuse before changing
        new_unit = self._check_addressing_write(kind, address, values)
        old_unit = self.unit_id
        if new_unit is None or old_unit is None or new_unit == old_unit or self._mover is None:
            super().write(kind, address, values)  # no server to move it: the id is recorded
        else:
            before = self.get(kind, address, len(values))
            super().write(kind, address, values)
            try:
                self._mover(old_unit, new_unit)
            except RequestRefusedError:
                self.set(kind, address, before)  # refused: nothing changed
                raise
        for point, value in updates:
            self._apply(point, value)
        if self._lease is not None:
            self._lease.written(kind, address, len(values), [point for point, _ in updates])

    def _check_addressing_write(
        self, kind: RegisterKind, address: int, values: Sequence[int]
    ) -> int | None:
        """The new unit id a write sets, if it covers the address register; refuses a unit
        id outside 1..247 and a baud code the profile does not list, as the device does."""
        addressing = self._addressing
        if addressing is None or kind is not RegisterKind.HOLDING:
            return None
        covered = range(address, address + len(values))
        baud_register = addressing.baud_register
        if baud_register is not None and baud_register in covered and addressing.baud_codes:
            code = values[baud_register - address]
            if code not in addressing.baud_codes:
                raise RequestRefusedError(
                    f"baud code {code} is none of {sorted(addressing.baud_codes)}",
                    ExceptionCode.ILLEGAL_DATA_VALUE,
                )
        if addressing.address_register not in covered:
            return None
        unit = values[addressing.address_register - address]
        if not 1 <= unit <= MAX_UNIT_ID:
            raise RequestRefusedError(
                f"unit id {unit} is outside 1..{MAX_UNIT_ID}", ExceptionCode.ILLEGAL_DATA_VALUE
            )
        return unit


class _Lease:
    """A controller's fail-safe: setpoints not rewritten within the timeout fall back.

    Evaluated lazily when a master reads, so no timer runs and a rig sees the fallback at
    the first read after the lease lapsed, as it would on the device.
    """

    def __init__(self, device: SimulatedDevice, spec: LeaseSpec, clock: Callable[[], float]):
        self._device = device
        self._spec = spec
        self._clock = clock
        self._written_at: float | None = None
        self._checking = False  # reading the timeout below reads the bank again
        self.expirations = 0

    def written(self, kind: RegisterKind, address: int, count: int, points: list[str]) -> None:
        profile = self._device.profile
        for name in self._spec.setpoints:
            spec = profile.points[name]
            touched = spec.kind == kind and spec.address < address + count
            if name in points or (touched and address < spec.end):
                self._written_at = self._clock()
                return

    def expire_if_due(self) -> None:
        if self._written_at is None or self._checking:
            return
        self._checking = True
        try:
            self._expire_if_due()
        finally:
            self._checking = False

    def _expire_if_due(self) -> None:
        assert self._written_at is not None
        timeout = float(self._device.value(self._spec.timeout))
        if timeout <= 0 or self._clock() - self._written_at < timeout:
            return
        self._written_at = None
        self.expirations += 1
        fallback = float(self._device.value(self._spec.fallback))
        for name in self._spec.setpoints:
            spec = self._device.profile.points[name]
            self._device.set_value(name, fallback > 0 if spec.is_bool else fallback)


class SimulatedDevice:
    def __init__(
        self, profile: ModbusProfile, *, seed: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.profile = profile
        self.effects = WriteEffects(profile)
        self.lease = _Lease(self, profile.lease, clock) if profile.lease is not None else None
        self.bank: SimulatedBank = SimulatedBank(
            self.effects, self.set_value, profile.addressing, self.lease
        )
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
        for spec in profile.points.values():
            self.bank.set(spec.kind, spec.address, [0] * spec.register_count)
        for kind, address, count in self.effects.targets():
            if not self._mapped(kind, address, count):
                self.bank.set(kind, address, [0] * count)
        self._fill_gaps()
        for name, spec in profile.points.items():
            self.set_value(name, self._initial(name, spec))
        defaults = profile.transport_defaults
        self.bank.map_addressing(baudrate=defaults.baudrate if defaults is not None else None)

    @property
    def values(self) -> dict[str, Value]:
        """Every point's value as the registers hold it now."""
        return {name: self.value(name) for name in self.profile.points}

    def value(self, point: str) -> Value:
        """A point's value as a master would read it."""
        spec = self.profile.points[point]
        return codec.decode(spec, self.bank.get(spec.kind, spec.address, spec.register_count))

    def set_value(self, point: str, value: Value) -> None:
        """Put an engineering value into the registers (rigs use this to script scenarios)."""
        spec = self.profile.points[point]
        if not isinstance(value, bool | str):
            if spec.is_bool:
                value = bool(round(float(value)))  # a walk moves True/False as 0..1
            elif spec.type.is_integer and spec.scale == 1:
                value = round(float(value))
        if spec.bit is not None:
            current = self.bank.get(spec.kind, spec.address, spec.register_count)
            words = codec.encode_bit(spec, current, value)
        else:
            words = codec.encode(spec, value)
        self.bank.set(spec.kind, spec.address, words)

    def step(self) -> None:
        """Move every simulated point one random step, staying inside its bounds.

        The walk goes on from what the registers hold, so a master's write sticks.
        """
        for name, sim in self.profile.simulation.items():
            if sim.step == 0 or sim.start is None:
                continue
            current = self.value(name)
            if isinstance(current, str):
                continue
            start = float(current) if math.isfinite(current) else sim.start
            proposed = start + self._rng.uniform(-sim.step, sim.step)
            self.set_value(name, min(sim.high, max(sim.low, proposed)))

    def _initial(self, name: str, spec: PointSpec) -> Value:
        sim = self.profile.simulation.get(name)
        if sim is None:
            return _neutral(spec)
        if sim.text is not None:
            return sim.text
        return sim.start if sim.start is not None else _neutral(spec)

    def _mapped(self, kind: RegisterKind, address: int, count: int) -> bool:
        try:
            self.bank.get(kind, address, count)
        except IllegalAddressError:
            return False
        return True

    def _fill_gaps(self) -> None:
        """Map the registers a merged read may cross (``max_gap``) as zeros, like the device.

        Holes inside the profile's refused areas stay unmapped: the device refuses them.
        """
        gap = self.profile.limits.max_gap
        if gap == 0:
            return
        used: dict[RegisterKind, set[int]] = {}
        for spec in self.profile.points.values():
            used.setdefault(spec.kind, set()).update(range(spec.address, spec.end))
        for kind, addresses in used.items():
            ordered = sorted(addresses)
            for before, after in pairwise(ordered):
                if not 1 < after - before <= gap + 1:
                    continue
                for address in range(before + 1, after):
                    if not any(
                        a.covers(kind, address, address + 1) for a in self.profile.limits.refused
                    ):
                        self.bank.set(kind, address, [0])


def _neutral(spec: PointSpec) -> Value:
    if spec.is_bool:
        return False
    if spec.type is DataType.STRING:
        return ""
    if spec.valid_range is not None:
        return spec.valid_range[0]
    return spec.offset
