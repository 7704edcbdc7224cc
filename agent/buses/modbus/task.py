"""The task that owns one Modbus bus (RTU serial, TCP, RTU over TCP) and every device on it.

It keeps each device's schedule, reads the fewest blocks the profile allows, learns what a
device refuses, runs commands ahead of polls, and keeps the counters diagnostics show. A
dead device costs the bus one probe per probe interval, never a timeout per poll period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import structlog

from smartpole.agent.buses.kind import BusContext
from smartpole.agent.buses.modbus import values
from smartpole.agent.buses.modbus.config import ModbusBus, ModbusRtuBus, ModbusTcpBus
from smartpole.agent.buses.modbus.learnt import LearntFile, learnt_view
from smartpole.agent.buses.modbus.meta import point_meta
from smartpole.agent.buses.polled import (
    REFUSED,
    STALE_AFTER_PERIODS,
    BehindProbeError,
    NothingToReadError,
    PolledBus,
    PolledDevice,
)
from smartpole.agent.buses.queue import QueuedPoints
from smartpole.agent.core.audit import AuditRecord
from smartpole.agent.core.health import LEARNT_KEY, BusHealth, DeviceHealth, Outcome
from smartpole.agent.core.points import Quality
from smartpole.drivers.errors import (
    CodecError,
    DeviceExceptionError,
    DeviceTimeoutError,
    DriverError,
    TransportError,
    WriteRejectedError,
)
from smartpole.drivers.line import frame_gap_s
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.client import Endpoint, ModbusClient
from smartpole.drivers.modbus.faults import ReplyFault, ReplyTimeoutError
from smartpole.drivers.modbus.learning import SPLIT_CODES, Learnt, Lesson
from smartpole.drivers.modbus.plan import ReadBlock
from smartpole.drivers.modbus.points import PointSpec
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.schema import Value

# One point of a block read: name, offset of its first register in the block, its decoder,
# and its spec when its quality needs a look (a valid range, a value that can be NaN);
# None when every value it can decode is good.
_Slot = tuple[str, int, codec.PointDecoder, PointSpec | None]

log = structlog.get_logger("smartpole.bus")

T = TypeVar("T")

_FAULT_OUTCOME = {
    ReplyFault.NO_ANSWER: Outcome.TIMEOUT,
    ReplyFault.CRC_ERROR: Outcome.CRC_ERROR,
    ReplyFault.GARBAGE: Outcome.GARBAGE,
    ReplyFault.WRONG_UNIT: Outcome.WRONG_UNIT,
    ReplyFault.WRONG_FUNCTION: Outcome.WRONG_FUNCTION,
}


@dataclass(kw_only=True)
class _Device(PolledDevice):
    profile: ModbusProfile
    unit_id: int
    learnt: Learnt = field(default_factory=Learnt)
    plan: list[ReadBlock] = field(default_factory=list)
    slots: dict[ReadBlock, tuple[_Slot, ...]] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """What the learnt limits belong to: another profile or unit is another device."""
        return f"{self.config.profile} unit {self.unit_id}"

    def probe(self) -> list[ReadBlock]:
        """One cheap request: the plan's first point alone. Never a long read, so a device
        silent on reads longer than its buffer is still seen alive (and learnt from)."""
        if not self.plan:
            return []
        first = self.plan[0].points[0]
        return [ReadBlock.of_point(first, self.profile.points[first])]

    def replan(self) -> None:
        self.plan = self.learnt.plan(self.profile.points, self.profile.limits)
        self.slots = {block: self._compile(block) for block in self.plan}
        self.health.unsupported_points = sorted(self.learnt.unsupported)

    def slots_of(self, block: ReadBlock) -> tuple[_Slot, ...]:
        """The block's decoders; a plan set from outside ``replan`` is compiled on use."""
        slots = self.slots.get(block)
        if slots is None:
            slots = self.slots[block] = self._compile(block)
        return slots

    def _compile(self, block: ReadBlock) -> tuple[_Slot, ...]:
        specs = self.profile.points
        return tuple(
            (
                name,
                specs[name].address - block.address,
                codec.compile_decoder(specs[name]),
                specs[name] if values.quality_varies(specs[name]) else None,
            )
            for name in block.points
        )


def _request_cost_s(bus: ModbusBus) -> float:
    """The longest one unanswered request holds the line: its reply timeout, or on RTU the
    rest for listening devices after it, if longer."""
    if isinstance(bus, ModbusRtuBus):
        return max(bus.timeout_s, bus.listen_window_s)
    return bus.timeout_s


def endpoint_of(bus: ModbusBus) -> Endpoint:
    if isinstance(bus, ModbusRtuBus):
        return Endpoint(
            "rtu",
            port=bus.port,
            baudrate=bus.baudrate,
            bytesize=bus.bytesize,
            parity=bus.parity,
            stopbits=bus.stopbits,
            listen_window_s=bus.listen_window_s,
        )
    if isinstance(bus, ModbusTcpBus):
        return Endpoint("tcp", host=bus.host, tcp_port=bus.port)
    return Endpoint("rtu-over-tcp", host=bus.host, tcp_port=bus.port)


class ModbusBusTask(QueuedPoints, PolledBus[_Device]):
    """One Modbus bus: block reads by plan, refusals learnt, writes with read-back."""

    def __init__(self, name: str, bus: ModbusBus, context: BusContext) -> None:
        # RTU frames end with 3.5 characters of silence; a master that talks sooner makes
        # slow devices merge two frames. TCP needs none; frame_gap_ms adds to either.
        gap = frame_gap_s(bus.baudrate) if isinstance(bus, ModbusRtuBus) else 0.0
        super().__init__(
            name,
            BusHealth(name, bus.endpoint, bus.describe()),
            context.table,
            retries=bus.retries,
            silence_s=gap + bus.frame_gap_ms / 1000,
        )
        self._bus = bus
        self._audit = context.audit
        self._client: ModbusClient | None = None
        self._learnt_file = LearntFile(context.state_dir, name, context.report_damage)
        for device_name, device in context.devices_on(name).items():
            profile = context.config.modbus_profile_of(device_name)
            stale_after = device.poll_period_s * STALE_AFTER_PERIODS + _request_cost_s(bus)
            for point, spec in profile.points.items():
                context.table.register(device_name, point, spec.unit, stale_after, point_meta(spec))
            unit_id = device.unit_id if device.unit_id is not None else 1
            health = DeviceHealth(
                device_name, name, f"unit {unit_id}", device.profile, device.offline_after
            )
            entry = _Device(
                name=device_name, config=device, health=health, profile=profile, unit_id=unit_id
            )
            entry.learnt = self._learnt_file.load(device_name, entry.identity)
            entry.replan()
            self._devices[device_name] = entry

    def read_plan(self) -> dict[str, object]:
        """Each device's reads and, under ``LEARNT_KEY`` once any was learnt, what the
        devices taught the plan: caps per register kind, holes, refused points."""
        plan: dict[str, object] = {
            device.name: [
                {"kind": b.kind.value, "address": b.address, "count": b.count, "points": b.points}
                for b in device.plan
            ]
            for device in self._devices.values()
        }
        learnt = {
            device.name: learnt_view(device.learnt)
            for device in self._devices.values()
            if device.learnt.caps or device.learnt.barriers or device.learnt.unsupported
        }
        if learnt:
            plan[LEARNT_KEY] = learnt
        return plan

    # ----- the protocol -----

    async def _connect(self) -> None:
        if self._client is None:
            self._client = ModbusClient(endpoint_of(self._bus), timeout_s=self._bus.timeout_s)
        await self._client.connect()

    async def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()

    def _late_answers(self) -> tuple[int, int]:
        client = self._client
        return (0, 0) if client is None else (client.late_answers, client.stray_bytes)

    def _outcome_of(self, exc: DriverError) -> Outcome:
        if isinstance(exc, ReplyTimeoutError):
            return _FAULT_OUTCOME[exc.fault]
        return super()._outcome_of(exc)

    async def _poll_device(self, device: _Device, *, probe: bool) -> bool:
        # A cautious poll (the device unknown, offline or just failed) starts with one
        # probe request, the plan's first point alone, no retries: a device that does not
        # answer must not eat the bus. If it answers, it is read in full at once, still
        # without retries. A refused read is learnt from and the poll goes on, by the new
        # plan, with the points not asked for yet: the device answered, and its other
        # points are due now, not once the plan has settled. The refused block's own
        # points wait for the next poll, so a poll costs at most one request per point,
        # and the refusals a device can cost in all are bounded by what there is to learn
        # (``learning.py``). A read the device, alive, does not answer at all may be too
        # long for its buffer: the poll goes on too (not on probation: there one silence
        # is its budget), but a second silence ends it (the device may have died just
        # now: that costs the bus one timeout more, once), and a silence that taught
        # nothing still fails the poll, so the next is cautious.
        # A device that refused every point has nothing left to read: it is asked again
        # for one of them (``_ask_again``) and is ``refusing`` until it serves.
        if not device.plan and device.learnt.unsupported:
            await self._ask_again(device)
            return False
        learnt = device.learnt
        learnt.poll_started()
        probing = probe
        pending = device.probe() if probe else list(device.plan)
        asked: set[str] = set()
        silent = 0
        refusal = 0
        failure: DriverError | None = None
        try:
            while pending:
                block = pending.pop(0)
                asked.update(block.points)
                read = partial(self._read, device, block)
                replanned = False
                try:
                    words = await self._request(device, read, retries=0 if probe else None)
                except DeviceExceptionError as exc:
                    if exc.code not in SPLIT_CODES:
                        raise
                    refusal = exc.code
                    self._refused(device, block, exc.code)
                    replanned = True
                except DeviceTimeoutError as exc:
                    silent += 1
                    if not (self._silence(device, exc) and learnt.alive):
                        raise  # silent on everything, or garbled: the device failing
                    replanned = self._silent(device, block)
                    if silent > 1 or (device.health.slow and not replanned):
                        raise  # on probation, one silence is its poll's budget
                    if not replanned:
                        failure = exc
                else:
                    learnt.answered(block)
                    self._store(device, block, words)
                if probing and failure is None:
                    probing, asked = False, set()  # it answered its probe: read it all now
                    pending = list(device.plan)
                elif replanned:
                    pending = [b for b in device.plan if asked.isdisjoint(b.points)]
            if not device.plan and learnt.unsupported:
                count = len(learnt.unsupported)
                why = f"refused every point ({count}), the last with exception {refusal}"
                raise NothingToReadError(why, refusal)
            if failure is not None:
                raise failure
        except (TransportError, NothingToReadError):
            raise
        except DriverError as exc:
            if probe and not probing:
                # Its probe was answered: counted as a poll that succeeded and a full
                # read (the next poll) that failed; a device that drops some requests is
                # slow, not offline.
                raise BehindProbeError(exc) from exc
            raise
        return probe  # a probe answered led into the full read: no follow-up poll needed

    async def _ask_again(self, device: _Device) -> None:
        """Every point was refused: one request, for the first of them alone, tells whether
        the device still refuses (it stays ``refusing``) or serves again (a device still
        booting may refuse everything): then its refusals are forgotten and it is read in
        full from the next poll, learning again what it still refuses."""
        specs = device.profile.points
        point = min(device.learnt.unsupported, key=lambda name: specs[name].address)
        block = ReadBlock.of_point(point, specs[point])
        try:
            words = await self._request(device, partial(self._read, device, block), retries=0)
        except DeviceExceptionError as exc:
            if exc.code not in SPLIT_CODES:
                raise
            why = f"refused every point, {point} again: {exc}"
            raise NothingToReadError(why, exc.code) from exc
        log.info("points_served_again", device=device.name, point=point)
        device.learnt.unsupported.clear()
        device.replan()
        self._store(device, block, words)

    def _silence(self, device: _Device, exc: DeviceTimeoutError) -> bool:
        """No answer at all: neither garbage, nor a corrupt frame nor another unit's."""
        return self._outcome_of(exc) is Outcome.TIMEOUT and device.garbled is None

    async def _read(self, device: _Device, block: ReadBlock) -> list[int]:
        return await self._require_client().read(
            block.kind, block.address, block.count, device.unit_id
        )

    def _refused(self, device: _Device, block: ReadBlock, code: int) -> None:
        """The device refused a read: cap or split its reads and remember (across restarts
        too), or drop a point it refuses."""
        lesson, detail = device.learnt.refused(block, code, device.profile.points)
        if lesson is Lesson.UNSUPPORTED:
            for point in block.points:
                self._table.mark_point_bad(device.name, point, REFUSED)
            log.warning("point_unsupported", device=device.name, point=detail, code=code)
        else:
            log.warning(
                "read_split", device=device.name, kind=block.kind.value, code=code,
                reason=f"exception {code}", block_address=block.address,
                block_count=block.count,
                **{"max_per_read" if lesson is Lesson.CAP else "at": detail},
            )  # fmt: skip
            self._save_learnt()
        device.replan()

    def _silent(self, device: _Device, block: ReadBlock) -> bool:
        """The device, alive, did not answer ``block``: True when that taught a cap (the
        second silence in a row of a read longer than any it answered)."""
        cap = device.learnt.silent(block, device.profile.points)
        if cap is None:
            return False
        log.warning(
            "read_split", device=device.name, kind=block.kind.value, reason="timeout",
            block_address=block.address, block_count=block.count, max_per_read=cap,
        )  # fmt: skip
        self._save_learnt()
        device.replan()
        return True

    def _save_learnt(self) -> None:
        self._learnt_file.save({d.name: (d.identity, d.learnt) for d in self._devices.values()})
        self.health.state_write_failures = self._learnt_file.write_failures

    def _require_client(self) -> ModbusClient:
        client = self._client
        # A stream broken by garbage is let through once, so the request reports it.
        if client is None or not (client.connected or client.stream_broken):
            raise TransportError(f"bus {self.name} is not connected")
        return client

    def _store(self, device: _Device, block: ReadBlock, words: list[int]) -> None:
        # Every value of every poll passes here: decoders and quality rules were settled
        # per plan (``_Device.replan``), and the table stores the block in one go.
        readings: list[tuple[str, Value, Quality]] = []
        good = Quality.GOOD
        for point, offset, decode, spec in device.slots_of(block):
            try:
                value = decode(words, offset)
            except CodecError:
                self._table.mark_point_bad(device.name, point)
                continue
            if spec is None:
                readings.append((point, value, good))
                continue
            quality = values.quality(spec, value)
            if quality is not good:
                device.health.suspect_values += 1
            readings.append((point, value, quality))
        self._table.update_many(device.name, readings)

    # ----- commands -----

    async def _read_point(self, device_name: str, point: str) -> object:
        device, spec = self._lookup(device_name, point)
        words = await self._request(
            device,
            lambda: self._require_client().read(
                spec.kind, spec.address, spec.register_count, device.unit_id
            ),
        )
        value = codec.decode(spec, words)
        self._table.update(device.name, point, value, values.quality(spec, value))
        return value

    async def _write_point(
        self, device_name: str, point: str, value: object, actor: str, audit: bool = True
    ) -> object:
        record = AuditRecord(actor, "write", f"{device_name}.{point}", value)
        try:
            device, spec = self._lookup(device_name, point)
            checked = values.checked_value(spec, value)
            kind, address, words = codec.encode_write(spec, checked)
            if spec.bit is not None and spec.write is None:
                current = await self._request(
                    device,
                    lambda: self._require_client().read(
                        spec.kind, spec.address, spec.register_count, device.unit_id
                    ),
                )
                words = codec.encode_bit(spec, current, checked)
            await self._request(
                device, lambda: self._require_client().write(kind, address, words, device.unit_id)
            )
            record.read_back = await self._read_point(device_name, point)
            record.ok = values.matches(spec, checked, record.read_back)
            if not record.ok:
                record.error = f"read back {record.read_back!r}, wrote {checked!r}"
        except (DriverError, CodecError) as exc:
            record.error = str(exc)
            self._audit.record(record)
            raise
        if audit or not record.ok:
            self._audit.record(record)
        if not record.ok:
            raise WriteRejectedError(f"{device_name}.{point}: {record.error}")
        return record.read_back

    def _lookup(self, device_name: str, point: str) -> tuple[_Device, PointSpec]:
        device = self._devices.get(device_name)
        if device is None:
            raise WriteRejectedError(f"no device {device_name!r} on bus {self.name}")
        spec = device.profile.points.get(point)
        if spec is None:
            known = ", ".join(device.profile.points)
            raise WriteRejectedError(f"device {device_name} has no point {point!r} ({known})")
        return device, spec
