"""The ``site:`` section: where the pole stands, so astro times need no network."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SiteConfig(_Strict):
    """Where the pole stands: all astro times are computed from this, with no network."""

    latitude: float = Field(ge=-90, le=90, description="degrees north (south is negative)")
    longitude: float = Field(ge=-180, le=180, description="degrees east (west is negative)")
    timezone: str = Field(description="IANA zone, e.g. Asia/Shanghai; steps are its wall time")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
