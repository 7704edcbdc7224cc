"""The typed shape of a Modbus device profile, beyond its points.

Each protocol's schema lives with its driver (like ``dlt645.profile`` and
``pelco_d.profile``): read limits and refused areas, readdressing registers, factory line
settings, setpoint leases, simulation and the manual's test vectors, and the cross-checks
between those sections. The points themselves are in ``smartpole.drivers.modbus.points``;
the agent's bus registry joins the protocols' profiles into one union.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from smartpole.drivers.modbus.points import (
    Address,
    DataType,
    PointSpec,
    RegisterKind,
    encodable_range,
)
from smartpole.drivers.schema import (
    FROM_YAML,
    WHOLE_NUMBER,
    Location,
    PointName,
    ProfileInfo,
    StrictModel,
)

Baudrate = Annotated[Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200], WHOLE_NUMBER]
Word = Annotated[int, Field(ge=0, le=0xFFFF)]


class RefusedArea(StrictModel):
    """Registers a device refuses to be read across, even inside ``max_gap``."""

    kind: Annotated[RegisterKind, FROM_YAML] = RegisterKind.HOLDING
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


class ModbusLimits(StrictModel):
    """What one device accepts in a single request (cheap devices accept less than the spec)."""

    max_registers_per_read: int = Field(125, ge=1, le=125)
    max_bits_per_read: int = Field(2000, ge=1, le=2000)
    max_gap: int = Field(0, ge=0, le=124, description="unmapped registers a merged read may cross")
    refused: list[RefusedArea] = Field(
        default_factory=list, description="areas no read may touch, whatever max_gap allows"
    )


class ModbusAddressing(StrictModel):
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


class TransportDefaults(StrictModel):
    """The manual's factory line settings; informative (the pole config decides)."""

    baudrate: Baudrate | None = None
    bytesize: Annotated[Literal[7, 8], WHOLE_NUMBER] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Annotated[Literal[1, 2], WHOLE_NUMBER] | None = None
    tcp_port: int | None = Field(None, ge=1, le=65535, description="Modbus TCP devices")

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        serial = (self.baudrate, self.bytesize, self.parity, self.stopbits)
        if self.tcp_port is not None and any(v is not None for v in serial):
            raise ValueError("a device is either serial (baudrate, ...) or TCP (tcp_port)")
        return self


class SimulatedValue(StrictModel):
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


class TestVector(StrictModel):
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


class LeaseSpec(StrictModel):
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
