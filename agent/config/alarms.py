"""The pole config's ``alarms`` section: what each alarm is, which readings feed it, and what
it does when raised.

An alarm kind is defined once (thresholds, hysteresis, debounce, latching) and fed by any
number of sources (``device.point``); ``on_raise`` names the safety actions: switch rw
points off (a relay channel) and report lamps as forced off, both held until an
authorised reset.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Severity = Literal["critical", "major", "minor", "warning"]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,79}$")]
Reading = float | bool | None


class Condition(StrEnum):
    PRESENT = "present"  # on the alarm side of the raise threshold, or the input says so
    ABSENT = "absent"  # on the safe side of the clear threshold
    BETWEEN = "between"  # in the hysteresis band: neither raises nor clears


class AlarmDefinition(BaseModel):
    """One alarm function, applied to every source that reports this ``kind``.

    Analog: raised when the value is above ``raise_above`` (or below ``raise_below``),
    cleared when it is below ``clear_below`` (above ``clear_above``); a clear threshold left
    out equals its raise threshold (no hysteresis). Both sides together make a band alarm
    (e.g. supply voltage). Digital: raised while the input equals ``raise_when``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    kind: Kind
    severity: Severity
    raise_above: float | None = None
    clear_below: float | None = None
    raise_below: float | None = None
    clear_above: float | None = None
    raise_when: bool | None = None
    debounce_s: float = Field(0.0, ge=0, le=86_400)
    latching: bool = Field(
        False, description="stays raised until acknowledged AND the condition is gone"
    )
    stale_after_s: float | None = Field(None, gt=0, le=7 * 86_400)
    sensor_lost_severity: Severity = "major"
    description: str = ""

    @model_validator(mode="after")
    def _thresholds(self) -> Self:
        analog = self.raise_above is not None or self.raise_below is not None
        if self.raise_when is not None and analog:
            raise ValueError("raise_when (digital) cannot be combined with raise_above/below")
        if self.raise_when is None and not analog:
            raise ValueError("give raise_above and/or raise_below (analog) or raise_when")
        if self.clear_below is not None:
            if self.raise_above is None:
                raise ValueError(
                    "clear_below goes with raise_above (for raise_below use clear_above)"
                )
            if self.clear_below > self.raise_above:
                raise ValueError(
                    f"clear_below ({self.clear_below}) must not be above raise_above "
                    f"({self.raise_above}): the clear threshold is on the safe side"
                )
        if self.clear_above is not None:
            if self.raise_below is None:
                raise ValueError(
                    "clear_above goes with raise_below (for raise_above use clear_below)"
                )
            if self.clear_above < self.raise_below:
                raise ValueError(
                    f"clear_above ({self.clear_above}) must not be below raise_below "
                    f"({self.raise_below}): the clear threshold is on the safe side"
                )
        if self.raise_above is not None and self.raise_below is not None:
            low, high = self.clear_level_low, self.clear_level_high
            crossed = low is not None and high is not None and low > high
            if self.raise_below >= self.raise_above or crossed:
                raise ValueError("raise_below/clear_above must lie below raise_above/clear_below")
        return self

    @property
    def digital(self) -> bool:
        return self.raise_when is not None

    @property
    def clear_level_high(self) -> float | None:
        """Below this the high side is safe again (None: no high side)."""
        return self.raise_above if self.clear_below is None else self.clear_below

    @property
    def clear_level_low(self) -> float | None:
        """Above this the low side is safe again (None: no low side)."""
        return self.raise_below if self.clear_above is None else self.clear_above

    def evaluate(self, value: Reading) -> Condition | None:
        """Where a reading stands; None when it does not fit (wrong type, NaN, missing)."""
        if self.raise_when is not None:
            if isinstance(value, bool):
                state = value
            elif isinstance(value, int | float) and value in (0, 1):
                state = bool(value)  # a digital input read as a register or coil
            else:
                return None
            return Condition.PRESENT if state == self.raise_when else Condition.ABSENT
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        if not math.isfinite(number):
            return None
        if (self.raise_above is not None and number > self.raise_above) or (
            self.raise_below is not None and number < self.raise_below
        ):
            return Condition.PRESENT
        high, low = self.clear_level_high, self.clear_level_low
        if (high is None or number < high) and (low is None or number > low):
            return Condition.ABSENT
        return Condition.BETWEEN


POINT_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.[a-z][a-z0-9_]*$"


class AlarmActions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cut: list[str] = Field(
        default_factory=list,
        description="rw true/false points (device.point) switched off when raised, e.g. a relay",
    )
    force_off: list[str] = Field(
        default_factory=list, description="lamps on the cut circuit, reported as forced off"
    )


class AlarmRule(BaseModel):
    """An alarm definition minus its kind (the key in the config) plus where it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    severity: str
    raise_above: float | None = None
    clear_below: float | None = None
    raise_below: float | None = None
    clear_above: float | None = None
    raise_when: bool | None = None
    debounce_s: float = 0.0
    latching: bool = False
    stale_after_s: float | None = None
    description: str = ""
    sources: list[str] = Field(min_length=1, description="device.point readings that feed it")
    on_raise: AlarmActions = Field(default_factory=AlarmActions)

    @model_validator(mode="after")
    def _valid_definition(self) -> Self:
        try:
            self.definition("check")
        except ValidationError as exc:
            raise ValueError(
                "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            ) from None
        return self

    def definition(self, kind: str) -> AlarmDefinition:
        fields = self.model_dump(exclude={"sources", "on_raise"})
        return AlarmDefinition.model_validate({"kind": kind, **fields}, strict=False)


def rule_problems(
    rules: dict[str, AlarmRule], points_of: dict[str, dict[str, tuple[bool, bool]]]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-checks against the devices: ``points_of[device][point] = (is_bool, writable)``."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for kind, rule in rules.items():
        for index, ref in enumerate(rule.sources):
            device, _, point = ref.rpartition(".")
            if point not in points_of.get(device, {}):
                problems.append(
                    (("alarms", kind, "sources", index), f"no point {ref!r} on this pole")
                )
        for index, ref in enumerate(rule.on_raise.cut):
            device, _, point = ref.rpartition(".")
            is_bool, writable = points_of.get(device, {}).get(point, (False, False))
            if not (is_bool and writable):
                problems.append(
                    (
                        ("alarms", kind, "on_raise", "cut", index),
                        f"{ref!r} is not a writable true/false point (a relay channel)",
                    )
                )
        for index, lamp in enumerate(rule.on_raise.force_off):
            if lamp not in points_of:
                problems.append(
                    (("alarms", kind, "on_raise", "force_off", index), f"no device {lamp!r}")
                )
    return problems
