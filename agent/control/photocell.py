"""The photocell fallback: dark or light from a light sensor's latest good reading.

Used only when the clock cannot be trusted (TALQ PhotocellFunction). Hysteresis keeps a
passing cloud or a car's headlights from cycling the lamps.
"""

from __future__ import annotations

from smartpole.agent.config.lighting import Photocell
from smartpole.agent.core.points import PointTable, Quality


class PhotocellReader:
    def __init__(self, config: Photocell, table: PointTable) -> None:
        self._config = config
        self._table = table
        self._dark: bool | None = None

    def dark(self) -> bool | None:
        """True/False from the sensor, or None when it has no good reading to give."""
        sample = self._table.sample(self._config.device, self._config.point)
        if sample is None or sample.quality is not Quality.GOOD:
            return None
        if not isinstance(sample.value, int | float) or isinstance(sample.value, bool):
            return None
        lux = float(sample.value)
        if lux < self._config.dark_below_lux:
            self._dark = True
        elif lux > self._config.light_above_lux:
            self._dark = False
        elif self._dark is None:
            self._dark = lux < (self._config.dark_below_lux + self._config.light_above_lux) / 2
        return self._dark
