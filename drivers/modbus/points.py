"""The Modbus point: where one value lives on the wire and how its registers decode.

The point model (register kinds, data types, orders, scale, write targets and their checks)
is one module the codec, the read planner and the bus can depend on without the rest of the
profile schema.
``smartpole.drivers.modbus.profile`` builds the device profile from these points.
"""

from __future__ import annotations

import math
import struct
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from smartpole.drivers.schema import FROM_YAML, StrictModel
from smartpole.drivers.units import Unit


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
Address = Annotated[int, Field(ge=0, le=0xFFFF, description="0-based protocol address")]


class WriteEncoding(StrEnum):
    """How a ``write:`` block turns the value written into the registers sent."""

    # value = channel << 8 | (1 if on else 0), one register with FC 06 (8-channel relays)
    CHANNEL_BYTE = "channel_byte"
    # the point's own type, orders and scale, sent to another address (setpoint registers)
    VALUE = "value"


class WriteSpec(StrictModel):
    """A write that goes somewhere other than the registers the point is read from."""

    address: Address
    encoding: Annotated[WriteEncoding, FROM_YAML] = WriteEncoding.VALUE
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


class PointSpec(StrictModel):
    """One value of the device, where it lives on the wire and how to read it."""

    kind: Annotated[RegisterKind, FROM_YAML] = RegisterKind.HOLDING
    address: Address
    type: Annotated[DataType, FROM_YAML] = DataType.U16
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
    unit: Unit = Field("", description="a symbol of drivers/units.py; empty: dimensionless")
    description: str = ""
    access: Literal["r", "rw"] = "r"
    valid_range: Annotated[tuple[float, float], FROM_YAML] | None = Field(
        None, description="the manual's measuring range; readings outside are uncertain"
    )
    write_min: float | None = Field(None, description="rw: lowest value a write may set")
    write_max: float | None = Field(None, description="rw: highest value a write may set")
    write: WriteSpec | None = Field(
        None, description="rw: where and how writes go when not to the point's own registers"
    )
    monotonic: bool = Field(False, description="a counter that only grows (energy, hours)")
    resolution: float | None = Field(
        None,
        description="the smallest step the device really resolves (the register's scale, or "
        "the manual's decimals for a float); telemetry is rounded to it",
    )

    @property
    def effective_resolution(self) -> float | None:
        """``resolution``, or for an integer register whose offset lies on its scale's grid
        the scale itself (2301 x 0.1 can only ever be a multiple of 0.1); None when the
        profile does not say and the wire cannot tell (a float, a string, a bit)."""
        if self.resolution is not None:
            return self.resolution
        if not self.type.is_integer or self.bit is not None:
            return None
        steps = self.offset / self.scale
        return abs(self.scale) if steps == int(steps) else None

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
        if self.monotonic and not self.is_numeric:
            raise ValueError("monotonic applies only to numeric points (a counter)")
        if self.valid_range is not None:
            if not self.is_numeric:
                raise ValueError("valid_range applies only to numeric points")
            if self.valid_range[0] > self.valid_range[1]:
                raise ValueError("valid_range must be [low, high] with low <= high")
        if self.resolution is not None:
            if not self.is_numeric:
                raise ValueError("resolution applies only to numeric points")
            if not (math.isfinite(self.resolution) and self.resolution > 0):
                raise ValueError("resolution must be a finite number above 0")
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
