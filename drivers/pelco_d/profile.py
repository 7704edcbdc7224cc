"""The profile of a Pelco-D PTZ camera: what it supports; Pelco-D has nothing to poll."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from smartpole.drivers.schema import Location, ProfileInfo

PresetNumber = Annotated[int, Field(ge=1, le=255)]


class PelcoDProfile(ProfileInfo):
    """A PTZ camera model: its presets, whether it reports its position, how fast it moves.

    The speeds are used by the simulator and by the client to bound how long a preset
    move may take before the read-back gives up waiting for the head to stop.
    """

    protocol: Literal["pelco-d"]
    max_preset: int = Field(255, ge=1, le=255, description="highest preset number it stores")
    reserved_presets: list[PresetNumber] = Field(
        default_factory=lambda: [95],
        description="numbers with a special meaning on this model (e.g. 95 opens the menu); "
        "never set, cleared or called as ordinary presets",
    )
    supports_position_query: bool = Field(
        False,
        description="answers the extended queries 0x51/0x53 and accepts 0x4B/0x4D positioning",
    )
    pan_speed_deg_s: float = Field(
        100.0, gt=0, le=1000, description="manual pan/tilt speed at speed byte 0x3F, °/s"
    )
    preset_speed_deg_s: float = Field(
        240.0, gt=0, le=1000, description="speed of a preset or absolute move (and turbo), °/s"
    )
    settle_s: float = Field(
        0.5,
        ge=0,
        le=10,
        description="how long the position must hold still before a move counts as finished; "
        "also covers the delay before the head starts moving",
    )

    def preset_problem(self, preset: int) -> str | None:
        """Why ``preset`` must not be used as an ordinary preset on this model, or None."""
        if not 1 <= preset <= self.max_preset:
            return f"preset {preset} is outside 1..{self.max_preset} for {self.model}"
        if preset in self.reserved_presets:
            return f"preset {preset} is reserved on {self.model} (a special function, not a view)"
        return None

    def longest_move_s(self) -> float:
        """Time of the longest possible preset move: half a turn at preset speed."""
        return 180.0 / self.preset_speed_deg_s

    def cross_check(self) -> list[tuple[Location, str]]:
        problems: list[tuple[Location, str]] = []
        seen: set[int] = set()
        for index, preset in enumerate(self.reserved_presets):
            if preset in seen:
                problems.append((("reserved_presets", index), f"preset {preset} is listed twice"))
            seen.add(preset)
        if all(n in seen for n in range(1, self.max_preset + 1)):
            problems.append(
                (("reserved_presets",), f"every preset 1..{self.max_preset} is reserved")
            )
        return problems
