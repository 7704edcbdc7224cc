"""The pole config's ``alarms`` section: which readings feed which alarm, and what it does.

An alarm kind is defined once (thresholds, hysteresis, debounce, latching) and fed by any
number of sources (``device.point``); ``on_raise`` names the safety actions: switch rw
points off (a relay channel) and report lamps as forced off, both held until an
authorised reset.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from smartpole.agent.control.alarms import AlarmDefinition

POINT_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.[a-z][a-z0-9_]*$"


class AlarmActions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cut: list[str] = Field(
        default_factory=list,
        description="rw true/false points (device.point) switched off when raised, e.g. a relay",
    )
    force_off: list[str] = Field(
        default_factory=list, description="lamps on the cut circuit, reported as forced off"
    )


class AlarmRule(BaseModel):
    """An alarm definition minus its kind (the key in the config) plus where it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
