"""The profile of a DL/T 645-2007 meter: which data identifiers to read and their format."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from smartpole.drivers.schema import Location, PointName, ProfileInfo, StrictModel


class Dlt645PointSpec(StrictModel):
    """One value, read with "read data" (control code 0x11) by its data identifier."""

    di: Annotated[int, Field(ge=0, le=0xFFFFFFFF, description="data identifier DI3..DI0")]
    format: str = Field(description='BCD layout from the standard, e.g. "XXX.X" or "XX.XXXX"')
    signed: bool = Field(False, description="the top bit of the highest byte is the sign")
    unit: str = ""
    description: str = ""
    valid_range: tuple[float, float] | None = None


class Dlt645Profile(ProfileInfo):
    protocol: Literal["dlt645"]
    points: dict[PointName, Dlt645PointSpec] = Field(min_length=1)

    def cross_check(self) -> list[tuple[Location, str]]:
        return []
