"""The typed shape of a device profile: what a device model's manual says about its data.

A profile is declarative (kind, address, type, order, scale, unit) so that adding a device
model means writing YAML checked against its manual's examples, not writing a driver. The
agent's config loader turns YAML files into these models and reports errors with lines.
"""

from __future__ import annotations

import math
import struct
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, TypeAdapter, model_validator

from smartpole.drivers.dlt645.profile import Dlt645Profile
from smartpole.drivers.pelco_d.profile import PelcoDProfile
from smartpole.drivers.schema import Location, PointName, ProfileInfo, StrictModel


class RegisterKind(StrEnum):
    """The four Modbus data areas; each has its own read function code."""

    COIL = "coil"
    DISCRETE = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bit(self) -> bool:
        return self in (RegisterKind.COIL, RegisterKind.DISCRETE)

    @property
    def is_writable(self) -> bool:
        """Coils and holding registers; a master can only read the other two."""
        return self in (RegisterKind.COIL, RegisterKind.HOLDING)


class DataType(StrEnum):
    BOOL = "bool"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"
    F64 = "f64"
    STRING = "string"

    @property
    def register_count(self) -> int:
        """Registers of one value; a string's count is its point's ``length`` instead."""
        try:
            return _REGISTER_COUNT[self]
        except KeyError:
            raise ValueError("a string's register count is its point's length") from None

    @property
    def is_integer(self) -> bool:
        return self in _INTEGER_RANGE


_REGISTER_COUNT = {
    DataType.BOOL: 1,
    DataType.U16: 1,
    DataType.I16: 1,
    DataType.U32: 2,
    DataType.I32: 2,
    DataType.F32: 2,
    DataType.F64: 4,
}
_INTEGER_RANGE = {
    DataType.U16: (0, 0xFFFF),
    DataType.I16: (-0x8000, 0x7FFF),
    DataType.U32: (0, 0xFFFF_FFFF),
    DataType.I32: (-0x8000_0000, 0x7FFF_FFFF),
}
_FLOAT_MAX = {
    DataType.F32: struct.unpack(">f", b"\x7f\x7f\xff\xff")[0],
    DataType.F64: 1.7976931348623157e308,
}
# Bits a bit point may select: the bits of the decoded integer, 0 = least significant.
_BIT_WIDTH = {DataType.U16: 16, DataType.U32: 32}
MAX_STRING_REGISTERS = 125  # the longest FC 03/04 read

Order = Literal["big", "little"]
Baudrate = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]
Word = Annotated[int, Field(ge=0, le=0xFFFF)]
Address = Annotated[int, Field(ge=0, le=0xFFFF, description="0-based protocol address")]


_Strict = StrictModel


class WriteEncoding(StrEnum):
    """How a ``write:`` block turns the value written into the registers sent."""

    # value = channel << 8 | (1 if on else 0), one register with FC 06 (8-channel relays)
    CHANNEL_BYTE = "channel_byte"
    # the point's own type, orders and scale, sent to another address (setpoint registers)
    VALUE = "value"


class WriteSpec(_Strict):
    """A write that goes somewhere other than the registers the point is read from."""

    address: Address
    encoding: WriteEncoding = WriteEncoding.VALUE
    channel: int | None = Field(
        None, ge=1, le=255, description="channel_byte: the channel number sent in the high byte"
    )

    @model_validator(mode="after")
    def _channel_fits_encoding(self) -> Self:
        if self.encoding is WriteEncoding.CHANNEL_BYTE and self.channel is None:
            raise ValueError("encoding channel_byte needs channel (1..255)")
        if self.encoding is not WriteEncoding.CHANNEL_BYTE and self.channel is not None:
            raise ValueError(f"channel does not apply to encoding {self.encoding.value}")
        return self


class PointSpec(_Strict):
    """One value of the device, where it lives on the wire and how to read it."""

    kind: RegisterKind = RegisterKind.HOLDING
    address: Address
    type: DataType = DataType.U16
    length: int | None = Field(
        None,
        ge=1,
        le=MAX_STRING_REGISTERS,
        description="string: registers it occupies (two characters each)",
    )
    bit: int | None = Field(
        None, ge=0, le=31, description="u16/u32: the point is this bit (0 = least significant)"
    )
    word_order: Order = Field("big", description="big: the high word comes first")
    byte_order: Order = Field("big", description="big: the high byte of each word first")
    scale: float = Field(1.0, description="engineering value = raw * scale + offset")
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    access: Literal["r", "rw"] = "r"
    valid_range: tuple[float, float] | None = Field(
        None, description="the manual's measuring range; readings outside are uncertain"
    )
    write_min: float | None = Field(None, description="rw: lowest value a write may set")
    write_max: float | None = Field(None, description="rw: highest value a write may set")
    write: WriteSpec | None = Field(
        None, description="rw: where and how writes go when not to the point's own registers"
    )

    @property
    def register_count(self) -> int:
        if self.type is DataType.STRING:
            if self.length is None:  # the validator requires it
                raise ValueError("a string point needs length")
            return self.length
        return self.type.register_count

    @property
    def end(self) -> int:
        """One past the last register this point occupies."""
        return self.address + self.register_count

    @property
    def is_bool(self) -> bool:
        """Reads as True/False: a coil, a discrete input, or one bit of a register."""
        return self.type is DataType.BOOL or self.bit is not None

    @property
    def is_numeric(self) -> bool:
        return not self.is_bool and self.type is not DataType.STRING

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind.is_bit != (self.type is DataType.BOOL):
            raise ValueError(
                f"type {self.type.value} does not fit register kind {self.kind.value}: "
                "coils and discrete inputs are bool, registers are numeric or string"
            )
        if (self.type is DataType.STRING) != (self.length is not None):
            raise ValueError(
                "a string needs length (its registers)"
                if self.type is DataType.STRING
                else "length applies only to type string"
            )
        if self.end > 0x10000:
            raise ValueError(f"point runs past the last address 0xFFFF ({self.type.value})")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError("scale must be a finite, non-zero number")
        if not math.isfinite(self.offset):
            raise ValueError("offset must be a finite number")
        if self.valid_range is not None:
            if not self.is_numeric:
                raise ValueError("valid_range applies only to numeric points")
            if self.valid_range[0] > self.valid_range[1]:
                raise ValueError("valid_range must be [low, high] with low <= high")
        self._check_bit()
        self._check_string()
        self._check_write()
        return self

    def _check_bit(self) -> None:
        if self.bit is None:
            return
        width = _BIT_WIDTH.get(self.type)
        if width is None:
            raise ValueError(f"bit applies only to u16 and u32 registers, not {self.type.value}")
        if self.bit >= width:
            raise ValueError(f"bit {self.bit} is outside a {self.type.value} (0..{width - 1})")
        if self.scale != 1 or self.offset != 0:
            raise ValueError("a bit point is True/False: it takes no scale or offset")

    def _check_string(self) -> None:
        if self.type is not DataType.STRING:
            return
        if self.scale != 1 or self.offset != 0:
            raise ValueError("a string takes no scale or offset")
        if self.word_order != "big":
            raise ValueError("a string is read register by register: word_order must be big")

    def _check_write(self) -> None:
        limits = (self.write_min, self.write_max)
        if self.access == "r":
            if limits != (None, None) or self.write is not None:
                raise ValueError("write_min, write_max and write apply only to access rw")
            return
        if not self.kind.is_writable:
            raise ValueError(f"a {self.kind.value} point is read-only: access must be r")
        if self.is_numeric:
            if self.write_min is None or self.write_max is None:
                raise ValueError("a numeric rw point needs write_min and write_max")
            if not all(math.isfinite(limit) for limit in (self.write_min, self.write_max)):
                raise ValueError("write_min and write_max must be finite numbers")
            if self.write_min > self.write_max:
                raise ValueError("write_min must not be greater than write_max")
            low, high = encodable_range(self)
            if not low <= self.write_min <= self.write_max <= high:
                raise ValueError(
                    f"write limits [{self.write_min}, {self.write_max}] go beyond what "
                    f"{self.type.value} with scale {self.scale} and offset {self.offset} "
                    f"can encode ([{low:.10g}, {high:.10g}])"
                )
        elif limits != (None, None):
            kind = "string" if self.type is DataType.STRING else "True/False"
            raise ValueError(f"a {kind} point takes no write_min or write_max")
        if self.write is not None:
            if self.write.encoding is WriteEncoding.CHANNEL_BYTE and not self.is_bool:
                raise ValueError("encoding channel_byte switches a True/False point only")
            if self.write.encoding is WriteEncoding.VALUE and self.bit is not None:
                raise ValueError(
                    "a bit point cannot be written as a value elsewhere; "
                    "use channel_byte or no write block (read-modify-write of its register)"
                )


def encodable_range(spec: PointSpec) -> tuple[float, float]:
    """Lowest and highest engineering value a numeric point's registers can hold."""
    if spec.type in _INTEGER_RANGE:
        low, high = _INTEGER_RANGE[spec.type]
    elif spec.type in _FLOAT_MAX:
        high = _FLOAT_MAX[spec.type]
        low = -high
    else:
        raise ValueError(f"{spec.type.value} points have no numeric range")
    ends = sorted((low * spec.scale + spec.offset, high * spec.scale + spec.offset))
    return ends[0], ends[1]


class RefusedArea(_Strict):
    """Registers a device refuses to be read across, even inside ``max_gap``."""

    kind: RegisterKind = RegisterKind.HOLDING
    start: Address
    end: Annotated[int, Field(ge=0, le=0xFFFF, description="inclusive, 0-based")]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start > self.end:
            raise ValueError("a refused area needs start <= end (both inclusive)")
        return self

    def covers(self, kind: RegisterKind, address: int, end: int) -> bool:
        """True if any of ``address .. end-1`` of ``kind`` lies in this area."""
        return kind == self.kind and address <= self.end and end > self.start


class ModbusLimits(_Strict):
    """What one device accepts in a single request (cheap devices accept less than the spec)."""

    max_registers_per_read: int = Field(125, ge=1, le=125)
    max_bits_per_read: int = Field(2000, ge=1, le=2000)
    max_gap: int = Field(0, ge=0, le=124, description="unmapped registers a merged read may cross")
    refused: list[RefusedArea] = Field(
        default_factory=list, description="areas no read may touch, whatever max_gap allows"
    )


class ModbusAddressing(_Strict):
    """Registers that set a device's own unit id and baud rate (devices shipped on one address).

    ``smartpole diag readdress`` writes them; ``diag scan`` may use ``probe_unit``.
    """

    address_register: Address = Field(description="holding register with the unit id")
    baud_register: Address | None = Field(None, description="holding register with a baud code")
    baud_codes: dict[Annotated[int, Field(ge=0, le=0xFFFF)], Baudrate] = Field(
        default_factory=dict, description="code written to baud_register -> baud rate"
    )
    probe_unit: int | None = Field(
        None, ge=1, le=255, description="unit id every such device answers, whatever its own"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.baud_codes and self.baud_register is None:
            raise ValueError("baud_codes need baud_register")
        if self.baud_register == self.address_register:
            raise ValueError("address_register and baud_register must differ")
        rates = list(self.baud_codes.values())
        if len(set(rates)) != len(rates):
            raise ValueError("two baud codes give the same baud rate")
        return self


class TransportDefaults(_Strict):
    """The manual's factory line settings; informative (the pole config decides)."""

    baudrate: Baudrate | None = None
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    tcp_port: int | None = Field(None, ge=1, le=65535, description="Modbus TCP devices")

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        serial = (self.baudrate, self.bytesize, self.parity, self.stopbits)
        if self.tcp_port is not None and any(v is not None for v in serial):
            raise ValueError("a device is either serial (baudrate, ...) or TCP (tcp_port)")
        return self


class SimulatedValue(_Strict):
    """How ``smartpole sim`` moves a point: a bounded random walk from ``start``.

    True/False points walk as 0/1; string points hold a fixed ``text``. ``min`` and ``max``
    default to ``start`` (a constant).
    """

    start: float | None = None
    step: float = Field(0.0, ge=0)
    min: float | None = None
    max: float | None = None
    text: str | None = Field(None, description="string points: the text the device shows")

    @property
    def low(self) -> float:
        return _first(self.min, self.start)

    @property
    def high(self) -> float:
        return _first(self.max, self.start)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.text is not None:
            if (self.start, self.min, self.max) != (None, None, None) or self.step:
                raise ValueError("text is for string points: it takes no start, step, min, max")
            return self
        if self.start is None:
            raise ValueError("simulation needs start (or text, for a string point)")
        if self.step and (self.min is None or self.max is None):
            raise ValueError("a walk (step > 0) needs min and max")
        if not self.low <= self.start <= self.high:
            raise ValueError("simulation needs min <= start <= max")
        return self


def _first(*values: float | None) -> float:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value")  # unreachable after validation


RegisterList = dict[int, list[Word]]
BitList = dict[int, list[Annotated[int, Field(ge=0, le=1)]]]


class TestVector(_Strict):
    """Raw registers (or bits) from the manual and the values they must decode to."""

    description: str = ""
    holding: RegisterList = Field(default_factory=dict)
    input: RegisterList = Field(default_factory=dict)
    coil: BitList = Field(default_factory=dict)
    discrete: BitList = Field(default_factory=dict)
    expect: dict[str, float | bool | str]

    def area(self, kind: RegisterKind) -> dict[int, list[int]]:
        """The vector's words (or bits) of one area, start address -> values."""
        areas: dict[RegisterKind, dict[int, list[int]]] = {
            RegisterKind.HOLDING: self.holding,
            RegisterKind.INPUT: self.input,
            RegisterKind.COIL: self.coil,
            RegisterKind.DISCRETE: self.discrete,
        }
        return areas[kind]


class LeaseSpec(_Strict):
    """A device that holds written setpoints only for a while (fail-safe leases).

    The agent commissions ``fallback`` (a road-safe level) and ``timeout``, then rewrites
    the ``setpoints`` before the timeout runs out; if the agent dies, the device returns
    to the fallback by itself. Booleans among the setpoints fall back to ``fallback > 0``.
    """

    setpoints: list[str] = Field(min_length=1, description="rw points the lease governs")
    timeout: str = Field(description="rw point holding the lease time in seconds")
    fallback: str = Field(description="rw point holding the level used when the lease lapses")


class ModbusProfile(ProfileInfo):
    """A Modbus device model; one YAML file per model under ``configs/profiles/``."""

    protocol: Literal["modbus"] = "modbus"
    transport_defaults: TransportDefaults | None = None
    addressing: ModbusAddressing | None = None
    lease: LeaseSpec | None = None
    limits: ModbusLimits = ModbusLimits()
    points: dict[PointName, PointSpec] = Field(min_length=1)
    simulation: dict[str, SimulatedValue] = Field(default_factory=dict)
    test_vectors: list[TestVector] = Field(default_factory=list)

    def cross_check(self) -> list[tuple[Location, str]]:
        """Problems between sections, each with the key path it belongs to."""
        problems = self._simulation_problems() + self._lease_problems()
        for number, vector in enumerate(self.test_vectors):
            for name, expected in vector.expect.items():
                where: Location = ("test_vectors", number, "expect", name)
                spec = self.points.get(name)
                if spec is None:
                    problems.append((where, f"no point named {name!r}"))
                elif (message := _expectation_mismatch(spec, expected)) is not None:
                    problems.append((where, message))
        problems += self._overlaps()
        for name, spec in self.points.items():
            limit = (
                self.limits.max_bits_per_read
                if spec.kind.is_bit
                else (self.limits.max_registers_per_read)
            )
            if spec.register_count > limit:
                problems.append(
                    (
                        ("points", name),
                        f"needs {spec.register_count} registers in one read, more than "
                        f"limits allow ({limit})",
                    )
                )
            for number, area in enumerate(self.limits.refused):
                if area.covers(spec.kind, spec.address, spec.end):
                    problems.append(
                        (
                            ("points", name),
                            f"lies in refused area limits.refused[{number}] "
                            f"({area.kind} {area.start}..{area.end})",
                        )
                    )
        return problems

    def _lease_problems(self) -> list[tuple[Location, str]]:
        if self.lease is None:
            return []
        named: list[tuple[str, int | None, str]] = [
            ("setpoints", i, name) for i, name in enumerate(self.lease.setpoints)
        ]
        named += [("timeout", None, self.lease.timeout), ("fallback", None, self.lease.fallback)]
        problems: list[tuple[Location, str]] = []
        for key, index, name in named:
            where: Location = ("lease", key) if index is None else ("lease", key, index)
            spec = self.points.get(name)
            if spec is None:
                problems.append((where, f"no point named {name!r}"))
            elif spec.access != "rw":
                problems.append((where, f"point {name!r} must be rw"))
        return problems

    def _simulation_problems(self) -> list[tuple[Location, str]]:
        problems: list[tuple[Location, str]] = []
        for name, sim in self.simulation.items():
            spec = self.points.get(name)
            if spec is None:
                problems.append((("simulation", name), f"no point named {name!r} in this profile"))
            elif (message := _simulation_mismatch(spec, sim)) is not None:
                problems.append((("simulation", name), message))
        return problems

    def _overlaps(self) -> list[tuple[Location, str]]:
        """Points that share registers; only bit points of one register may."""
        problems: list[tuple[Location, str]] = []
        ordered = sorted(self.points.items(), key=lambda item: (item[1].kind, item[1].address))
        active: list[tuple[str, PointSpec]] = []  # earlier points reaching this far
        for name, spec in ordered:
            active = [
                (other, o) for other, o in active if o.kind == spec.kind and o.end > spec.address
            ]
            clash = next((item for item in active if not _may_share(item[1], spec)), None)
            if clash is not None:
                problems.append(
                    (("points", name), f"overlaps point {clash[0]!r} in the {spec.kind} area")
                )
            active.append((name, spec))
            active.sort(key=lambda item: -item[1].end)  # report the widest first
        return problems


def _may_share(a: PointSpec, b: PointSpec) -> bool:
    """Bit points of the same register, read the same way, may share it."""
    return (
        a.bit is not None
        and b.bit is not None
        and (a.address, a.type, a.word_order, a.byte_order)
        == (b.address, b.type, b.word_order, b.byte_order)
    )


def _expectation_mismatch(spec: PointSpec, expected: float | bool | str) -> str | None:
    if spec.type is DataType.STRING:
        return None if isinstance(expected, str) else "a string point expects text"
    if spec.is_bool:
        return None if isinstance(expected, bool) else "a True/False point expects true or false"
    if isinstance(expected, bool | str):
        return f"a {spec.type.value} point expects a number"
    return None


def _simulation_mismatch(spec: PointSpec, sim: SimulatedValue) -> str | None:
    if spec.type is DataType.STRING:
        if sim.text is None:
            return "a string point is simulated with text"
        size = len(sim.text.encode("utf-8"))
        if size > 2 * spec.register_count:
            return f"text of {size} bytes does not fit {spec.register_count} registers"
        return None
    if sim.text is not None:
        return "text is only for string points; use start, step, min, max"
    if spec.is_bool:
        if {sim.low, sim.high, _first(sim.start)} - {0.0, 1.0}:
            return "a True/False point is simulated with start, min, max of 0 or 1"
        return None
    low, high = encodable_range(spec)
    if not low <= sim.low <= sim.high <= high:
        return f"min and max must lie within what {spec.type.value} can encode"
    return None


# Any device profile; the ``protocol`` key picks the schema (Modbus when it is absent).
DeviceProfile = ModbusProfile | Dlt645Profile | PelcoDProfile
PROFILE_MODELS: dict[str, type[DeviceProfile]] = {
    "modbus": ModbusProfile,
    "dlt645": Dlt645Profile,
    "pelco-d": PelcoDProfile,
}
_PROFILE_ADAPTER: TypeAdapter[DeviceProfile] = TypeAdapter(
    Annotated[DeviceProfile, Field(discriminator="protocol")]
)


def parse_profile(data: object) -> DeviceProfile:
    """Validate raw profile data (a mapping from YAML); raises pydantic's ValidationError."""
    if isinstance(data, dict) and "protocol" not in data:
        data = {**data, "protocol": "modbus"}
    return _PROFILE_ADAPTER.validate_python(data)
