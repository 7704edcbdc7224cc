"""Building blocks shared by every protocol's profile schema.

Kept apart from the protocol modules so that each can define its own profile model without
importing the others; the agent's bus registry joins them into one union.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

# The value of a point as any protocol decodes it; quality and time travel beside it.
Value = float | int | bool | str

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
PointName = Annotated[str, Field(pattern=NAME_PATTERN)]
Location = tuple[str | int, ...]


#: Marks a field YAML can only spell in another type: an enum by its string value, a tuple
#: as a list. Only that conversion is lax; the items inside stay strict.
FROM_YAML = Strict(False)


def _whole_number(value: object) -> object:
    if isinstance(value, bool | float):
        raise ValueError(f"expected a whole number (got {value!r})")
    return value


#: For a ``Literal`` of numbers, which pydantic matches by equality even in strict mode:
#: ``True == 1`` and ``9600.0 == 9600``, so ``stopbits: true`` would be one stop bit.
WHOLE_NUMBER = BeforeValidator(_whole_number)


class StrictModel(BaseModel):
    """Unknown keys are errors, and a loaded profile never changes. Strict types: a YAML
    ``true`` or ``1.0`` is no register address or count (lax pydantic takes both as 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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
