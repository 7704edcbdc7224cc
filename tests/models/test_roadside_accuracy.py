"""Issue #18's first "Done when": road users at known places and speeds, and how well the
pipeline's RSM reports them.

The video is built once per session (``helpers.ground_truth_video``: real cars cut from the
street clip and a box truck from the arterial clip, composited onto the street clip's empty
street along ground-plane trajectories through a known camera; 16 s of 1280x720 at 25
fps). ``reported`` runs the product on it as a technician would check a camera's
geo-calibration on a recording: ``smartpole analyze VIDEO --config POLE.yaml --rsm
OUT.jsonl``, with the camera calibrated by four marks of the known ground plane. The scorer
(``helpers.rsm_scoring``, which defines "established", "due" and "missing") reads only the
RSM payloads, in wire units, and converts latitude/longitude with its own local frame.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any, Final

import av
import pytest

from helpers import ground_truth_scene as scene
from helpers.ground_truth_video import GroundTruth, build
from helpers.paths import SHARED_DATA
from helpers.processes import SMARTPOLE, pole_config
from helpers.rsm_scoring import LATLON_UNIT, LocalFrame, Score, first_stamp, score

VIDEOS = SHARED_DATA / "video"
CLIPS = [VIDEOS / name for name in sorted({c.clip for c in scene.CROPS.values()})]
FRAME = LocalFrame(scene.ORIGIN_LAT, scene.ORIGIN_LON)
#: Wall-clock epoch of stream time 0 in the scorer's own test messages: a minute starts at
#: stream time 7.51 s, between the 7.5 s tick and the 7.52 s frame its state is from
#: (secMark wraps in between).
EPOCH_MS: Final = 1_800_000_000_000 + 52_490

pytestmark = pytest.mark.skipif(
    not all(clip.is_file() for clip in CLIPS), reason=f"shared clips {CLIPS} are absent"
)


@pytest.fixture(scope="session")
def truth(tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    return build(VIDEOS, tmp_path_factory.mktemp("ground-truth"))


def truth_camera(video: Path) -> dict[str, Any]:
    """The camera that films the truth video, geo-calibrated by four ground marks."""
    image, ground = scene.calibration_points()
    return {
        "source": str(video),
        "lines": {"road": {"from": [0, 500], "to": [1279, 500]}},
        "calibration": {
            "image": [list(p) for p in image],
            "origin": {"latitude": scene.ORIGIN_LAT, "longitude": scene.ORIGIN_LON},
            "ground_en_m": [list(p) for p in ground],
        },
    }


@pytest.fixture(scope="session")
def analyzed(truth: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``analyze --json`` of the truth video with ``--rsm``; what it wrote under "rsm"."""
    folder = tmp_path_factory.mktemp("analyze-rsm")
    out = folder / "out.jsonl"
    site = {"latitude": scene.ORIGIN_LAT, "longitude": scene.ORIGIN_LON, "timezone": "UTC"}
    sections = {
        "site": site,
        "cameras": {"truth": truth_camera(truth.video)},
        "v2x": {"host": "127.0.0.1", "rsu_id": "R-truth"},
    }
    config = pole_config(folder, sections=sections)
    argv = [*SMARTPOLE, "analyze", str(truth.video), "--config", str(config)]
    done = subprocess.run(
        [*argv, "--rsm", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    result["rsm"] = [json.loads(line) for line in out.read_text().splitlines()]
    return result


@pytest.fixture(scope="session")
def reported(analyzed: dict[str, Any]) -> list[dict[str, Any]]:
    """The RSM payloads ``analyze --rsm`` wrote (the scene has no zone, so no RSI)."""
    lines = analyzed["rsm"]
    assert {line["topic"] for line in lines} == {"V2X/RSU/R-truth/RSM/UP"}
    return [line["payload"] for line in lines]


@pytest.fixture(scope="session")
def scored(analyzed: dict[str, Any], truth: GroundTruth, reported: list[dict[str, Any]]) -> Score:
    epoch_ms = int(analyzed["rsm_epoch_ms"])
    assert first_stamp(reported) >= epoch_ms
    return score(reported, truth, FRAME, epoch_ms)


def test_the_video_is_720p25_h264_with_the_truth_of_every_frame(truth: GroundTruth) -> None:
    with av.open(str(truth.video)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 1280, 720)
        assert stream.average_rate == 25
        decoded = sum(1 for _ in container.decode(stream))
    assert decoded == len(truth.frames) == scene.DURATION_S * scene.FPS
    due = {s.participant for samples in truth.frames for s in samples if s.fully_visible}
    assert due == {t.participant for t in scene.SCENARIO}


def test_every_calibration_point_is_inside_the_frame() -> None:
    image, _ = scene.calibration_points()
    assert all(0 <= u < scene.WIDTH and 0 <= v < scene.HEIGHT for u, v in image)


def test_positions_are_within_1_m_at_p95(scored: Score) -> None:
    assert len(scored.position_m) >= 80, scored.summary()
    assert scored.percentile(scored.position_m, 95) <= 1.0, scored.summary()


def test_speeds_are_within_1_ms_at_p95(scored: Score) -> None:
    assert len(scored.speed_ms) >= 80, scored.summary()
    assert scored.percentile(scored.speed_ms, 95) <= 1.0, scored.summary()


def test_no_road_user_is_missing_for_more_than_3_messages(scored: Score) -> None:
    assert set(scored.longest_gap) == {t.participant for t in scene.SCENARIO}, scored.summary()
    assert max(scored.longest_gap.values()) <= 3, scored.summary()


# The scorer itself, on payloads made from the truth: it must see what it is meant to see.


def _perfect(
    truth: GroundTruth, *, shift_m: float = 0.0, speed_off: float = 0.0
) -> list[dict[str, Any]]:
    """RSM payloads that report every road user on the road exactly (plus the offsets)."""
    payloads = []
    for tick in range(int(scene.DURATION_S * 10)):
        index = round(tick * 0.1 * truth.fps)
        if index >= len(truth.frames):
            break
        stamp = EPOCH_MS + tick * 100
        participants = []
        for s in truth.frames[index]:
            lat, lon = FRAME.to_latlon(s.east_m + shift_m, s.north_m)
            participants.append(
                {
                    "ptcType": "motor",
                    "ptcId": s.participant + 100,
                    "secMark": (EPOCH_MS + round(index / truth.fps * 1000)) % 60000,
                    "pos": {"lat": round(lat / LATLON_UNIT), "lon": round(lon / LATLON_UNIT)},
                    "speed": round((s.speed_ms + speed_off) / 0.02),
                    "heading": round(s.heading_deg / 0.0125),
                }
            )
        payloads.append(
            {
                "name": "RSM",
                "timeStamp": stamp,
                "content": {"rsms": [{"participants": participants}]},
            }
        )
    return payloads


def test_the_scorer_finds_no_error_in_the_truth_itself(truth: GroundTruth) -> None:
    result = score(_perfect(truth), truth, FRAME, EPOCH_MS)
    assert result.missing == 0
    assert result.due >= 80
    assert max(result.position_m) < 0.03  # 1e-7 degree is 1.1 cm
    assert max(result.speed_ms) <= 0.01
    assert all(len(ids) == 1 for ids in result.ids.values())


def test_the_scorer_sees_a_position_or_speed_off_by_more_than_the_bar(truth: GroundTruth) -> None:
    shifted = score(_perfect(truth, shift_m=1.2), truth, FRAME, EPOCH_MS)
    assert math.isclose(shifted.percentile(shifted.position_m, 95), 1.2, abs_tol=0.02)
    slow = score(_perfect(truth, speed_off=-1.5), truth, FRAME, EPOCH_MS)
    assert math.isclose(slow.percentile(slow.speed_ms, 95), 1.5, abs_tol=0.02)


def test_the_scorer_counts_missing_messages_while_due(truth: GroundTruth) -> None:
    payloads = _perfect(truth)
    gone = {25, 26, 27, 28}  # 2.5-2.8 s: road user 1 is due from 1.9 s to 3.5 s
    result = score([p for i, p in enumerate(payloads) if i not in gone], truth, FRAME, EPOCH_MS)
    assert result.missing >= 4
    assert result.longest_gap[1] == 4
    three = score(
        [p for i, p in enumerate(payloads) if i not in {25, 26, 27}], truth, FRAME, EPOCH_MS
    )
    assert three.longest_gap[1] == 3
    assert score(payloads[:0], truth, FRAME, EPOCH_MS).missing == result.due


def test_the_geo_frame_round_trips_to_a_millimetre() -> None:
    for east, north in [(0.0, 0.0), (35.0, -12.5), (-250.0, 400.0)]:
        back = FRAME.to_en(*FRAME.to_latlon(east, north))
        assert math.hypot(back[0] - east, back[1] - north) < 1e-3


def test_a_crop_is_scaled_to_its_real_width_at_its_distance() -> None:
    near, far = scene.pixels_per_metre_across(3.0, 8.0), scene.pixels_per_metre_across(3.0, 24.0)
    assert near / far == pytest.approx(24.0 / 8.0, rel=0.15)  # a pinhole: size ~ 1 / distance
    u, v = scene.to_image(3.0, 10.0)
    assert scene.to_ground(u, v) == pytest.approx((3.0, 10.0))
