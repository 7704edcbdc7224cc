"""How much a camera sways and drifts, from the offsets the motion stage estimated.

Operators need one number for "is this mount steady" (``diag cameras``): the motion stage
compensates sway, so counts hold, but a camera that keeps swaying several pixels is a mount
to stiffen before the sway outgrows the search (``global_motion.SEARCH_RADIUS``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

#: Seconds of camera offsets that ``ShakeMeter`` summarises.
SHAKE_WINDOW_S: Final = 10.0


class ShakeMeter:
    """The camera offsets of the last ``window_s`` seconds, summarised in native pixels.

    ``shake_px`` is the RMS distance from the window's mean position (sway, vibration);
    ``drift_px`` the distance of the latest offset from where the background started.
    Running sums make each frame O(1); the pipeline thread updates, the health thread
    only reads the two floats.
    """

    def __init__(self, window_s: float = SHAKE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float, float]] = deque()
        self._sums = [0.0, 0.0, 0.0, 0.0]  # x, y, x^2, y^2
        self.shake_px = 0.0
        self.drift_px = 0.0

    def add(self, t_s: float, x: float, y: float) -> None:
        samples, sums = self._samples, self._sums
        samples.append((t_s, x, y))
        sums[0] += x
        sums[1] += y
        sums[2] += x * x
        sums[3] += y * y
        while samples and samples[0][0] <= t_s - self.window_s:
            _, ox, oy = samples.popleft()
            sums[0] -= ox
            sums[1] -= oy
            sums[2] -= ox * ox
            sums[3] -= oy * oy
        n = len(samples)
        mx, my = sums[0] / n, sums[1] / n
        var = max(0.0, sums[2] / n - mx * mx) + max(0.0, sums[3] / n - my * my)
        self.shake_px = math.sqrt(var)
        self.drift_px = math.hypot(x, y)
