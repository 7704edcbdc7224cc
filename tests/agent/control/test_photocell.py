"""Untrusted clock: the photocell decides, with hysteresis; without it, the default level."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smartpole.agent.config.lighting import Photocell
from smartpole.agent.control.lighting import LightingController
from smartpole.agent.control.photocell import PhotocellReader
from smartpole.agent.core.points import PointTable, Quality


class _Lamp:
    def __init__(self) -> None:
        self.levels: list[int] = []

    async def commission(self, lamp: str, *, fallback_level: int, lease_s: int) -> None:
        return None

    async def push(self, lamp: str, level: int, *, changed: bool) -> None:
        self.levels.append(level)


def test_photocell_hysteresis_and_bad_readings() -> None:
    table = PointTable()
    table.register("weather", "illuminance", "lx", 60.0)
    cell = PhotocellReader(
        Photocell(device="weather", point="illuminance", dark_below_lux=20, light_above_lux=50),
        table,
    )
    assert cell.dark() is None  # no reading yet
    for lux, dark in [(10, True), (35, True), (60, False), (35, False), (19, True)]:
        table.update("weather", "illuminance", lux, Quality.GOOD)
        assert cell.dark() is dark, lux
    table.update("weather", "illuminance", 5, Quality.UNCERTAIN)
    assert cell.dark() is None  # a doubtful reading decides nothing


def test_untrusted_clock_follows_the_photocell_then_the_default(tmp_path: Path) -> None:
    dark: list[bool | None] = [True]
    lamp = _Lamp()
    controller = LightingController(
        ["lamp1"], None, lamp, state_dir=tmp_path, clock_trusted=lambda: False,
        photocell_dark=lambda: dark[0], refresh_s=60,
    )  # fmt: skip

    async def ticks() -> None:
        await controller.tick()
        dark[0] = False
        await controller.tick()
        dark[0] = None  # the sensor died: the road gets the default light state
        await controller.tick()

    asyncio.run(ticks())
    assert lamp.levels == [100, 0, 100]
    assert controller.target("lamp1").source == "default"
