"""Hand-made counting labels, and how a count compares with them.

Why it exists: the only honest measure of a camera's counts is a recording counted by hand.
A technician setting up a new camera (and our accuracy bench, on every labelled clip we
have) labels each crossing of the counting line and compares ``smartpole analyze`` with it.
New labelled clips are picked up without code changes, so the format is plain JSON:

* ``line``: ``[[x1, y1], [x2, y2]]`` in the video's native pixels;
* ``events`` (or ``crossings``): one object per road user crossing the line, with
  ``frame`` (0-based), ``direction`` (``A``/``B``, or ``in``/``out``: A is "in", from the
  side where ``cross(p2 - p1, p - p1) < 0`` to where it is > 0), ``class`` and optionally
  ``alt_class`` for a vehicle on the border between two classes (a full-size van: light or
  heavy).

Label classes are mapped onto the product's: ``car`` (light vehicles), ``large``/``truck``/
``bus`` (heavy), ``motorcycle``, ``bicycle``, ``pedestrian``/``person``. The comparison is
per direction and per group the way traffic engineers read counts: motor vehicles, heavy
vehicles, and bicycles with pedestrians.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

Direction = Literal["in", "out"]
DIRECTIONS: Final[tuple[Direction, ...]] = ("in", "out")

#: Label class -> product class. ``large`` is the labels' word for any heavy vehicle.
_LABEL_CLASSES: Final[Mapping[str, str]] = {
    "car": "car",
    "large": "truck",
    "truck": "truck",
    "bus": "bus",
    "motorcycle": "motorcycle",
    "bicycle": "bicycle",
    "pedestrian": "person",
    "person": "person",
}
#: The groups a count is judged by, and the product classes in each.
GROUPS: Final[Mapping[str, frozenset[str]]] = {
    "motor": frozenset({"car", "truck", "bus", "motorcycle"}),
    "heavy": frozenset({"truck", "bus"}),
    "vulnerable": frozenset({"bicycle", "person"}),
}
#: Allowed error per group: max(floor, share of the truth).
TOLERANCE: Final[Mapping[str, tuple[int, float]]] = {
    "motor": (1, 0.03),
    "heavy": (1, 0.15),
    "vulnerable": (1, 0.15),
}


class LabelsError(Exception):
    """A labels file that cannot be read or does not follow the format."""


@dataclass(frozen=True)
class LabelledCrossing:
    frame: int
    direction: Direction
    class_name: str
    alt_class: str | None = None


@dataclass(frozen=True)
class Labels:
    """One clip's ground truth."""

    path: Path
    clip: str
    line: tuple[tuple[float, float], tuple[float, float]]
    crossings: tuple[LabelledCrossing, ...]

    @property
    def line_arg(self) -> str:
        """The line as ``analyze --line`` takes it."""
        (x1, y1), (x2, y2) = self.line
        return ",".join(f"{v:g}" for v in (x1, y1, x2, y2))

    def truth(self, direction: Direction, group: str) -> tuple[int, int]:
        """(fewest, most) crossings of ``group`` in ``direction`` the labels allow: a
        borderline vehicle (``alt_class``) may be counted in either of its classes."""
        members = GROUPS[group]
        low = high = 0
        for c in self.crossings:
            if c.direction != direction:
                continue
            classes = {c.class_name} | ({c.alt_class} if c.alt_class else set())
            inside = [name in members for name in classes]
            low += all(inside)
            high += any(inside)
        return low, high


def load(path: Path) -> Labels:
    """Read a labels file (``LabelsError`` with the reason if it is not one)."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
        (x1, y1), (x2, y2) = raw["line"]
        line = ((float(x1), float(y1)), (float(x2), float(y2)))
        items = raw["events"] if "events" in raw else raw["crossings"]
        clip = str(raw.get("clip") or raw["video"])
        crossings = tuple(_crossing(item) for item in items)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabelsError(f"{path}: not a labels file: {exc!r}") from exc
    if not all(map(math.isfinite, (*line[0], *line[1]))):
        raise LabelsError(f"{path}: line ends must be finite numbers")
    return Labels(path=path, clip=clip, line=line, crossings=crossings)


def _crossing(item: Mapping[str, Any]) -> LabelledCrossing:
    direction = {"A": "in", "B": "out", "in": "in", "out": "out"}[item["direction"]]
    alt = item.get("alt_class")
    return LabelledCrossing(
        frame=int(item["frame"]),
        direction="in" if direction == "in" else "out",
        class_name=_LABEL_CLASSES[item["class"]],
        alt_class=_LABEL_CLASSES[alt] if alt else None,
    )


@dataclass(frozen=True)
class GroupScore:
    """One direction x group of one clip: what was counted against what is true."""

    direction: Direction
    group: str
    counted: int
    low: int
    high: int

    @property
    def allowed(self) -> int:
        floor, share = TOLERANCE[self.group]
        return max(floor, math.floor(share * self.high))

    @property
    def ok(self) -> bool:
        return self.low - self.allowed <= self.counted <= self.high + self.allowed

    @property
    def truth_text(self) -> str:
        return str(self.high) if self.low == self.high else f"{self.low}-{self.high}"


def score(labels: Labels, counts: Mapping[str, Mapping[str, int]]) -> list[GroupScore]:
    """Compare ``analyze``'s ``counts`` (direction -> class -> n) with the labels."""
    out: list[GroupScore] = []
    for direction in DIRECTIONS:
        for group, members in GROUPS.items():
            counted = sum(n for name, n in counts.get(direction, {}).items() if name in members)
            low, high = labels.truth(direction, group)
            out.append(GroupScore(direction, group, counted, low, high))
    return out


def phantoms(labels: Labels, counts: Mapping[str, Mapping[str, int]]) -> list[Direction]:
    """Directions with no labelled traffic at all in which something was counted."""
    return [
        d
        for d in DIRECTIONS
        if not any(c.direction == d for c in labels.crossings)
        and sum(counts.get(d, {}).values()) > 0
    ]
