"""Interim RSM from the pipeline's raw tracks, until ``smartpole analyze --rsm`` exists.

Why: the ground-truth test must prove its generator and its scorer now, and the product's
own RSM path (Kalman estimator, message builder, ``analyze --rsm``) is being built beside
it. This runs the real ``Pipeline`` over a video and, on a 10 Hz tick of stream time,
writes for every confirmed track measured within the last 0.2 s an RSM participant in the
wire's shape and units: its last measured bottom-centre mapped through the calibration
(with that measurement's time as ``secMark``) and its speed and heading from the
calibration's 1 s least-squares ground velocity. No smoothing beyond that: what the
Kalman filter adds is measured when the lead switches the test to ``analyze --rsm``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

from helpers.rsm_scoring import (
    HEADING_UNIT_DEG,
    LATLON_UNIT,
    PERIOD_S,
    SPEED_UNIT_MS,
    LocalFrame,
)
from smartpole.agent.config.cameras import CameraConfig
from smartpole.models.calibration import GroundCalibration
from smartpole.models.pipeline import Pipeline
from smartpole.models.roadside import PTC_TYPE_CODE, ptc_type_of
from smartpole.models.source import VideoSource
from smartpole.models.tracker import Track

MAX_AGE_S: Final = 0.2


def _participant(
    track: Track, calibration: GroundCalibration, frame: LocalFrame, epoch_ms: int
) -> dict[str, Any] | None:
    t_s, x, y = track.points[-1]
    ground = calibration.ground_point(x, y)
    if ground is None:
        return None
    velocity = calibration.ground_velocity(track) or (0.0, 0.0)
    lat, lon = frame.to_latlon(*ground)
    heading = math.degrees(math.atan2(velocity[0], velocity[1])) % 360.0
    return {
        "ptcType": PTC_TYPE_CODE[ptc_type_of(track.class_name)],
        "ptcId": track.id % 65536,
        "global_track_id": str(track.id),
        "source": 5,
        "secMark": (epoch_ms + round(t_s * 1000)) % 60000,
        "pos": {"lat": round(lat / LATLON_UNIT), "lon": round(lon / LATLON_UNIT), "ele": 0},
        "speed": round(math.hypot(*velocity) / SPEED_UNIT_MS),
        "heading": round(heading / HEADING_UNIT_DEG) % 28800,
        "size": {"width": 180, "length": 450, "height": 30},
    }


def rsm_payloads(
    video: Path,
    calibration: tuple[list[tuple[float, float]], list[tuple[float, float]]],
    frame: LocalFrame,
    epoch_ms: int,
) -> list[dict[str, Any]]:
    """One RSM payload per 10 Hz tick of ``video``'s stream time (epoch ``epoch_ms``)."""
    image, ground = calibration
    config = CameraConfig.model_validate(
        {
            "source": str(video),
            "lines": {"unused": {"from": (0, 700), "to": (100, 700)}},
            "calibration": {"image": image, "ground_m": ground},
        }
    )
    source = VideoSource(str(video))
    pipeline: Pipeline | None = None
    payloads: list[dict[str, Any]] = []
    next_tick = 0
    for video_frame in source.frames():
        if pipeline is None:
            pipeline = Pipeline(config, video_frame.width, video_frame.height)
        result = pipeline.process(video_frame)
        calibration_ = pipeline.scene.calibration
        assert calibration_ is not None
        if result.t_s < next_tick * PERIOD_S - 1e-6:
            continue
        tick_ms = epoch_ms + round(next_tick * PERIOD_S * 1000)
        fresh = [t for t in result.tracks if result.t_s - t.points[-1][0] <= MAX_AGE_S]
        participants = [_participant(t, calibration_, frame, epoch_ms) for t in fresh]
        payloads.append(
            {
                "name": "RSM",
                "id": "truth",
                "msgCnt": next_tick % 128,
                "timeStamp": tick_ms,
                "content": {
                    "rsms": [
                        {
                            "refPos": {
                                "lat": round(frame.lat0 / LATLON_UNIT),
                                "lon": round(frame.lon0 / LATLON_UNIT),
                                "ele": 0,
                            },
                            "participants": [p for p in participants if p is not None],
                        }
                    ]
                },
            }
        )
        next_tick = math.floor(result.t_s / PERIOD_S + 1e-6) + 1
    return payloads
