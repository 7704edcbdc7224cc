"""The typed shape of a device profile: what a device model's manual says about its data.

A profile is declarative (kind, address, type, order, scale, unit) so that adding a device
model means writing YAML checked against its manual's examples, not writing a driver. The
agent's config loader turns YAML files into these models and reports errors with lines.
"""

from __future__ import annotations

import math
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


class DataType(StrEnum):
    BOOL = "bool"
    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"
    F64 = "f64"

    @property
    def register_count(self) -> int:
        return _REGISTER_COUNT[self]


_REGISTER_COUNT = {
    DataType.BOOL: 1,
    DataType.U16: 1,
    DataType.I16: 1,
    DataType.U32: 2,
    DataType.I32: 2,
    DataType.F32: 2,
    DataType.F64: 4,
}

Order = Literal["big", "little"]


_Strict = StrictModel


class PointSpec(_Strict):
    """One value of the device, where it lives on the wire and how to read it."""

    kind: RegisterKind = RegisterKind.HOLDING
    address: Annotated[int, Field(ge=0, le=0xFFFF, description="0-based protocol address")]
    type: DataType = DataType.U16
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

    @property
    def register_count(self) -> int:
        return self.type.register_count

    @property
    def end(self) -> int:
        """One past the last register this point occupies."""
        return self.address + self.register_count

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind.is_bit != (self.type is DataType.BOOL):
            raise ValueError(
                f"type {self.type.value} does not fit register kind {self.kind.value}: "
                "coils and discrete inputs are bool, registers are numeric"
            )
        if self.end > 0x10000:
            raise ValueError(f"point runs past the last address 0xFFFF ({self.type.value})")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError("scale must be a finite, non-zero number")
        if self.valid_range is not None and self.valid_range[0] > self.valid_range[1]:
            raise ValueError("valid_range must be [low, high] with low <= high")
        return self


class ModbusLimits(_Strict):
    """What one device accepts in a single request (cheap devices accept less than the spec)."""

    max_registers_per_read: int = Field(125, ge=1, le=125)
    max_bits_per_read: int = Field(2000, ge=1, le=2000)
    max_gap: int = Field(0, ge=0, le=124, description="unmapped registers a merged read may cross")


class SimulatedValue(_Strict):
    """How ``smartpole sim`` moves a point: a bounded random walk from ``start``."""

    start: float
    step: float = Field(0.0, ge=0)
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.min <= self.start <= self.max:
            raise ValueError("simulation needs min <= start <= max")
        return self


class TestVector(_Strict):
    """Raw registers from the manual and the values they must decode to."""

    description: str = ""
    holding: dict[int, list[Annotated[int, Field(ge=0, le=0xFFFF)]]] = Field(default_factory=dict)
    input: dict[int, list[Annotated[int, Field(ge=0, le=0xFFFF)]]] = Field(default_factory=dict)
    expect: dict[str, float | bool]


class ModbusProfile(ProfileInfo):
    """A Modbus device model; one YAML file per model under ``configs/profiles/``."""

    protocol: Literal["modbus"] = "modbus"
    limits: ModbusLimits = ModbusLimits()
    points: dict[PointName, PointSpec] = Field(min_length=1)
    simulation: dict[str, SimulatedValue] = Field(default_factory=dict)
    test_vectors: list[TestVector] = Field(default_factory=list)

    def cross_check(self) -> list[tuple[Location, str]]:
        """Problems between sections, each with the key path it belongs to."""
        problems: list[tuple[Location, str]] = [
            (("simulation", name), f"no point named {name!r} in this profile")
            for name in self.simulation
            if name not in self.points
        ]
        for number, vector in enumerate(self.test_vectors):
            problems += [
                (("test_vectors", number, "expect", name), f"no point named {name!r}")
                for name in vector.expect
                if name not in self.points
            ]
        by_area = sorted(self.points.items(), key=lambda item: (item[1].kind, item[1].address))
        widest: tuple[str, PointSpec] | None = None  # the point reaching furthest so far
        for name, spec in by_area:
            if widest is not None and widest[1].kind != spec.kind:
                widest = None
            if widest is not None and spec.address < widest[1].end:
                problems.append(
                    (("points", name), f"overlaps point {widest[0]!r} in the {spec.kind} area")
                )
            if widest is None or spec.end > widest[1].end:
                widest = (name, spec)
        return problems


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
