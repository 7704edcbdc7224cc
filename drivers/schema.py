"""Building blocks shared by every protocol's profile schema.

Kept apart from the protocol modules so that each can define its own profile model without
importing the others; the agent's bus registry joins them into one union.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# The value of a point as any protocol decodes it; quality and time travel beside it.
Value = float | int | bool | str

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
PointName = Annotated[str, Field(pattern=NAME_PATTERN)]
Location = tuple[str | int, ...]


class StrictModel(BaseModel):
    """Unknown keys are errors, and a loaded profile never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileInfo(StrictModel):
    """What every profile says about the device model, whatever its protocol; each
    protocol's profile model subclasses it with its ``protocol`` literal."""

    protocol: str
    model: str
    manufacturer: str
    description: str = ""
    manual: str = Field("", description="where the register map or data list comes from")

    def cross_check(self) -> list[tuple[Location, str]]:
        """Problems between sections, each with the key path it belongs to."""
        return []
