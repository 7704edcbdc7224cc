"""The ``power:`` section: which relay channel feeds each device, and when the agent may
power-cycle it by itself (``control/power.py`` carries the cycles out)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from smartpole.agent.config.alarms import POINT_REF


class PowerRule(BaseModel):
    """How one device's supply is switched; the key in the config is the device's name."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    relay: str = Field(
        pattern=POINT_REF, description="the relay channel feeding the device, e.g. relays.relay2"
    )
    off_s: float = Field(10.0, gt=0, le=600, description="how long the power stays off")
    auto_after_offline_s: float | None = Field(
        None, gt=0, description="cycle automatically after this long offline; None: manual only"
    )
    max_attempts: int = Field(3, ge=1, le=20, description="automatic cycles before giving up")
    backoff_s: float = Field(
        600.0, ge=0, le=86400, description="wait after the first automatic cycle, doubling"
    )
    reset_after_online_s: float = Field(
        3600.0, ge=0, description="the attempt count resets after this long online"
    )

    @property
    def relay_device(self) -> str:
        return self.relay.rpartition(".")[0]

    @property
    def relay_point(self) -> str:
        return self.relay.rpartition(".")[2]

    def backoff_after(self, attempts: int) -> float:
        """The wait after the ``attempts``-th cycle: backoff_s, 2 x backoff_s, 4 x ..."""
        return float(self.backoff_s * 2 ** max(attempts - 1, 0))


def power_rule_problems(
    rules: Mapping[str, PowerRule], points_of: Mapping[str, Mapping[str, tuple[bool, bool]]]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-checks against the devices: ``points_of[device][point] = (is_bool, writable)``."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for device, rule in rules.items():
        if device not in points_of:
            problems.append((("power", device), f"no device {device!r} on this pole"))
        is_bool, writable = points_of.get(rule.relay_device, {}).get(
            rule.relay_point, (False, False)
        )
        if not (is_bool and writable):
            problems.append(
                (
                    ("power", device, "relay"),
                    f"{rule.relay!r} is not a writable true/false point (a relay channel)",
                )
            )
        if rule.relay_device == device:
            problems.append(
                (
                    ("power", device, "relay"),
                    "a relay module cannot power-cycle itself: it could not switch back on",
                )
            )
    return problems
