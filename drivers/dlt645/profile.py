"""The profile of a DL/T 645-2007 meter: which data identifiers to read and their format."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from smartpole.drivers.dlt645.frame import BcdLayout, decode_bcd, encode_bcd, parse_format
from smartpole.drivers.errors import CodecError
from smartpole.drivers.schema import FROM_YAML, Location, PointName, ProfileInfo, StrictModel
from smartpole.drivers.units import Unit


class Dlt645PointSpec(StrictModel):
    """One value, read with "read data" (control code 0x11) by its data identifier."""

    di: Annotated[int, Field(ge=0, le=0xFFFFFFFF, description="data identifier DI3..DI0")]
    format: str = Field(description='BCD layout from the standard, e.g. "XXX.X" or "XX.XXXX"')
    signed: bool = Field(False, description="the top bit of the highest byte is the sign")
    unit: Unit = Field("", description="a symbol of drivers/units.py; empty: dimensionless")
    description: str = ""
    valid_range: Annotated[tuple[float, float], FROM_YAML] | None = None
    monotonic: bool = Field(False, description="a counter that only grows (energy)")
    resolution: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="the smallest step the meter resolves; default: the format's last decimal",
    )

    @property
    def effective_resolution(self) -> float:
        """``resolution``, or one unit of the format's last digit (``XXX.X``: 0.1)."""
        if self.resolution is not None:
            return self.resolution
        return float(Decimal(1).scaleb(-self.layout.decimals))

    @field_validator("format")
    @classmethod
    def _known_layout(cls, value: str) -> str:
        parse_format(value)  # its ValueError becomes a located validation error
        return value

    @model_validator(mode="after")
    def _ordered_range(self) -> Self:
        if self.valid_range is not None and self.valid_range[0] > self.valid_range[1]:
            raise ValueError("valid_range must be [low, high] with low <= high")
        return self

    @property
    def layout(self) -> BcdLayout:
        return parse_format(self.format)

    @property
    def byte_length(self) -> int:
        """Bytes of the value on the wire (after the 4 DI bytes of a reply)."""
        return self.layout.length

    def representable(self, value: float) -> bool:
        try:
            encode_bcd(value, self.format, self.signed)
        except CodecError:
            return False
        return True


class Dlt645SimulatedValue(StrictModel):
    """How the simulator moves a point: a bounded random walk from ``start``."""

    start: float
    step: float = Field(0.0, ge=0)
    min: float
    max: float
    monotonic: bool = Field(False, description="only ever moves up, like an energy register")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.min <= self.start <= self.max:
            raise ValueError("simulation needs min <= start <= max")
        return self


def _hex_bytes(value: str) -> str:
    try:
        bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{value!r} is not hex bytes such as '01 22'") from None
    return value


HexBytes = Annotated[
    str,
    AfterValidator(_hex_bytes),
    Field(description="hex bytes, spaces allowed, e.g. '01 22'"),
]


class Dlt645TestVector(StrictModel):
    """Value bytes from a manual or a captured reply, and what they must decode to.

    ``raw`` holds each point's value bytes as they sit in a reply's data field after the DI
    and with the 0x33 offset already removed: BCD, least-significant byte first (220.1 V in
    ``XXX.X`` is ``01 22``).
    """

    description: str = ""
    raw: dict[str, HexBytes]
    expect: dict[str, float]


class Dlt645Profile(ProfileInfo):
    protocol: Literal["dlt645"]
    points: dict[PointName, Dlt645PointSpec] = Field(min_length=1)
    simulation: dict[str, Dlt645SimulatedValue] = Field(default_factory=dict)
    test_vectors: list[Dlt645TestVector] = Field(default_factory=list)

    def cross_check(self) -> list[tuple[Location, str]]:
        """Problems between sections, each with the key path it belongs to."""
        problems: list[tuple[Location, str]] = []
        seen: dict[int, str] = {}
        for name, spec in self.points.items():
            other = seen.setdefault(spec.di, name)
            if other != name:
                problems.append((("points", name), f"DI {spec.di:08X} is also point {other!r}"))
        for name, sim in self.simulation.items():
            point = self.points.get(name)
            if point is None:
                problems.append((("simulation", name), f"no point named {name!r} in this profile"))
                continue
            for key, value in (("min", sim.min), ("max", sim.max)):
                if not point.representable(value):
                    problems.append(
                        (("simulation", name, key), f"{value} does not fit {point.format}")
                    )
        for number, vector in enumerate(self.test_vectors):
            problems += self._check_vector(number, vector)
        return problems

    def _check_vector(self, number: int, vector: Dlt645TestVector) -> list[tuple[Location, str]]:
        where = ("test_vectors", number)
        problems: list[tuple[Location, str]] = [
            ((*where, "raw", name), f"no point named {name!r}")
            for name in vector.raw
            if name not in self.points
        ]
        problems += [
            ((*where, "raw", name), "no expected value for these bytes")
            for name in vector.raw
            if name in self.points and name not in vector.expect
        ]
        for name, expected in vector.expect.items():
            spec = self.points.get(name)
            if spec is None:
                problems.append(((*where, "expect", name), f"no point named {name!r}"))
                continue
            text = vector.raw.get(name)
            if text is None:
                problems.append(((*where, "expect", name), "no raw bytes for this point"))
                continue
            try:
                actual = decode_bcd(bytes.fromhex(text), spec.format, spec.signed)
            except CodecError as exc:
                problems.append(((*where, "raw", name), str(exc)))
                continue
            if not math.isclose(actual, expected, rel_tol=0, abs_tol=1e-9):
                problems.append(
                    ((*where, "expect", name), f"raw {text!r} decodes to {actual}, not {expected}")
                )
        return problems
