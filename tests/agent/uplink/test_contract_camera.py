"""Camera payloads (traffic summaries, camera events) against the published schemas.

The daemon forwards what a worker wrote once its own gate (``parse_line``, pydantic over
the worker's TypedDicts) let it in, so the schema must accept everything the gate accepts
and refuse what it refuses: a summary with a key missing, unknown or of the wrong type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.contract import errors
from helpers.payloads import EPOCH, FINITE, NAMES, POLE, Capture, check_all
from smartpole.agent.cameras import Cameras
from smartpole.agent.config.camera_worker import MalformedLineError, parse_line

EVENT_KINDS = st.sampled_from(["stopped_vehicle", "wrong_way", "pedestrian_on_carriageway"])
ZONE_EVENTS = st.fixed_dictionaries(
    {
        "type": EVENT_KINDS,
        "zone": NAMES,
        "track_id": st.integers(0, 10**6),
        "class": NAMES,
        "t_s": FINITE,
        "duration_s": FINITE,
    }
)
MAYBE = st.none() | FINITE
SUMMARIES = st.fixed_dictionaries(
    {
        "type": st.just("summary"),
        "camera": NAMES,
        "interval_start": FINITE,
        "interval_s": FINITE,
        "lines": st.dictionaries(
            NAMES,
            st.dictionaries(st.sampled_from(["in", "out"]), st.dictionaries(NAMES, st.integers())),
            max_size=2,
        ),
        "speed_kmh": st.dictionaries(
            NAMES,
            st.fixed_dictionaries({"mean": MAYBE, "p85": MAYBE, "n": st.integers()}),
            max_size=2,
        ),
        "zones": st.dictionaries(
            NAMES, st.fixed_dictionaries({"occupancy": FINITE, "mean_dwell_s": MAYBE}), max_size=2
        ),
        "queue": st.dictionaries(
            NAMES,
            st.fixed_dictionaries(
                {
                    "max_vehicles": st.integers(),
                    "mean_vehicles": FINITE,
                    "max_length": FINITE,
                    "unit": st.sampled_from(["m", "px"]),
                }
            ),
            max_size=2,
        ),
        "events": st.lists(ZONE_EVENTS, max_size=2),
        "quality": st.fixed_dictionaries(
            {
                "fps": FINITE,
                "frames": st.integers(),
                "dropped": st.integers(),
                "state": st.sampled_from(["ok", "dark", "blocked", "shaken", "no_frames"]),
            }
        ),
    },
    optional={"partial": st.booleans()},
)
CAMERA_EVENTS = st.fixed_dictionaries(
    {
        "type": st.just("event"),
        "camera": NAMES,
        "event": EVENT_KINDS,
        "zone": NAMES,
        "track_id": st.integers(),
        "class": NAMES,
        "t_s": FINITE,
        "duration_s": FINITE,
    }
)


def _cameras(capture: Capture) -> Cameras:
    return Cameras({}, Path("/"), capture)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(summary=SUMMARIES, event=CAMERA_EVENTS)
def test_camera_summaries_and_events_as_the_supervisor_records_them_validate(
    summary: dict[str, Any], event: dict[str, Any]
) -> None:
    # Only what the daemon's own gate lets in from a worker reaches the outbox.
    parsed_summary = parse_line(json.dumps(summary))
    parsed_event = parse_line(json.dumps(event))
    capture = Capture()
    cameras = _cameras(capture)
    cameras._record_summary(summary["camera"], parsed_summary)  # type: ignore[arg-type]
    cameras._record_event(event["camera"], parsed_event)  # type: ignore[arg-type]
    assert check_all(capture) == 2


def _mutations(value: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``value`` with one top-level key dropped, one unknown key added, or one value
    replaced by a value of another JSON type."""
    keys = sorted(value)
    dropped = st.sampled_from(keys).map(lambda k: {x: v for x, v in value.items() if x != k})
    added = st.just({**value, "unknown_key": 1})
    other = st.sampled_from(keys).flatmap(
        lambda k: st.sampled_from(["text", 1.5, [1], {"a": 1}, None, True]).map(
            lambda v: {**value, k: v}
        )
    )
    return dropped | added | other


def _schema_accepts_summary(data: dict[str, Any]) -> bool:
    envelope = {
        "pole": POLE,
        "epoch": EPOCH,
        "stream": "traffic",
        "seq": 1,
        "ts": 1.0,
        "data": data,
    }
    return not errors("traffic.schema.json", envelope)


def _gate_accepts(line: dict[str, Any]) -> bool:
    try:
        parse_line(json.dumps(line))
    except MalformedLineError:
        return False
    return True


@settings(max_examples=100, deadline=None)
@given(data=st.data(), summary=SUMMARIES)
def test_the_traffic_schema_and_the_daemons_gate_agree_on_wrong_shapes(
    data: st.DataObject, summary: dict[str, Any]
) -> None:
    mutated = data.draw(_mutations({k: v for k, v in summary.items() if k != "type"}))
    gate = _gate_accepts({"type": "summary", **mutated})
    assert _schema_accepts_summary(mutated) == gate, mutated
