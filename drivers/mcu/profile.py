"""The profile of a pole microcontroller: which bridge protocol and how many relay channels.

The MCU declares its commands itself (the dictionary it serves at identify), so the profile
only says what the agent may expect of the model before it connects; the agent checks the
dictionary against it at connect and refuses a mismatch with a clear error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from smartpole.drivers.schema import Location, ProfileInfo


class McuProfile(ProfileInfo):
    protocol: Literal["pole-mcu"]
    dictionary_version: int = Field(
        1, ge=1, description="version of the bridge protocol's command dictionary it serves"
    )
    relays: int = Field(8, ge=1, le=8, description="relay channels the MCU switches")

    def cross_check(self) -> list[tuple[Location, str]]:
        return []
