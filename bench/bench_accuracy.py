"""Counting accuracy on every hand-labelled clip: ``smartpole analyze`` against the labels.

The baseline is the truth itself: each clip in ``../shared/data/labels/`` (and the project's
own street clip, ``tests/data/street-2lane-labels.json``) was counted by hand. A new labels
file dropped into that folder is picked up without code changes (format: ``models/labels.py``).

For every clip and direction it prints counted and true motor vehicles, heavy vehicles and
bicycles with pedestrians (``BENCH count.<clip>.<dir>.<group> <counted> of_<truth>``), each
judged by the issue's bar (motor within max(1, 3 %), heavy within max(1, 15 %), nothing in a
direction with no traffic), then the clips' summary: the share of groups within the bar and
the motor vehicles counted over all clips against the truth. ``--detail`` lists the
labelled crossings left unmatched and the counted crossings no label explains (within
one second), which is where to look first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from smartpole.models.labels import Labels, load, phantoms, score

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
LABELS = [*sorted((SHARED / "labels").glob("*.json")), REPO / "tests/data/street-2lane-labels.json"]
SMARTPOLE = [sys.executable, "-m", "smartpole.agent"]


def analyze(labels: Labels, model: Path | None) -> dict[str, Any]:
    clip = SHARED / "video" / labels.clip
    command = [*SMARTPOLE, "analyze", str(clip), "--line", labels.line_arg, "--json"]
    if model is not None:
        command += ["--model", str(model)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"analyze {clip.name} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def detail(labels: Labels, result: dict[str, Any], fps: float) -> list[str]:
    """Labelled crossings no counted one matches, and counted ones no label explains."""
    counted = list(result.get("crossings", []))
    lines = []
    for want in labels.crossings:
        t = want.frame / fps
        match = next(
            (c for c in counted if c["direction"] == want.direction and abs(c["t_s"] - t) <= 1.0),
            None,
        )
        if match is None:
            lines.append(f"#   missed frame {want.frame} {want.direction} {want.class_name}")
        else:
            counted.remove(match)
            if match["class"] != want.class_name and match["class"] != want.alt_class:
                lines.append(
                    f"#   frame {want.frame} {want.direction} {want.class_name} "
                    f"counted as {match['class']}"
                )
    for extra in counted:
        lines.append(
            f"#   extra t={extra['t_s']:.2f}s (frame ~{round(extra['t_s'] * fps)}) "
            f"{extra['direction']} {extra['class']} track {extra['track_id']}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="detector; default: the product's own")
    parser.add_argument("--detail", action="store_true", help="list missed and extra crossings")
    parser.add_argument("--only", help="clips whose name contains this")
    args = parser.parse_args()
    if not (SHARED / "video").is_dir():
        print(f"# {SHARED} is absent: no labelled clips", file=sys.stderr)
        return 1
    within = total = motor_counted = motor_true = 0
    for path in LABELS:
        labels = load(path)
        if args.only and args.only not in labels.clip:
            continue
        result = analyze(labels, args.model)
        name = Path(labels.clip).stem
        for row in score(labels, result["counts"]):
            if row.high == 0 and row.counted == 0 and row.group != "motor":
                continue
            verdict = "ok" if row.ok else f"OFF(allowed {row.allowed})"
            print(
                f"BENCH count.{name}.{row.direction}.{row.group} {row.counted} "
                f"of_{row.truth_text} # {verdict}"
            )
            within += row.ok
            total += 1
            if row.group == "motor":
                motor_counted += row.counted
                motor_true += row.high
        for direction in phantoms(labels, result["counts"]):
            print(f"# PHANTOM: {name} counted traffic in direction {direction}, which has none")
            total += 1
        if args.detail:
            raw = json.loads(path.read_text())
            fps = float(raw.get("fps") or 25.0)
            print("\n".join(detail(labels, result, fps)))
        print(f"BENCH analyze_fps.{name} {result['fps']} frames/s", flush=True)
    print(f"BENCH count_groups_within_bar {within}/{total} groups")
    print(f"BENCH count_motor_all_clips {motor_counted}/{motor_true} vehicles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
