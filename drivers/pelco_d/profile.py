"""The profile of a Pelco-D PTZ camera: what it supports; Pelco-D has nothing to poll."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from smartpole.drivers.schema import Location, ProfileInfo


class PelcoDProfile(ProfileInfo):
    protocol: Literal["pelco-d"]
    max_preset: int = Field(255, ge=1, le=255, description="highest preset number it stores")

    def cross_check(self) -> list[tuple[Location, str]]:
        return []
