"""The technician's text views: what a value, a latency and a read plan look like."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.agent import diag


@pytest.mark.parametrize(
    ("latency_ms", "shown"),
    [(None, "-"), (0.31, "0.31 ms"), (0.004, "0.00 ms"), (9.87, "9.87 ms"), (15.26, "15.3 ms"),
     (250.4, "250 ms")],
)  # fmt: skip
def test_latency_has_sub_millisecond_resolution(latency_ms: float | None, shown: str) -> None:
    assert diag.format_latency(latency_ms) == shown


@given(st.floats(min_value=0.005, max_value=1e6, allow_nan=False))
def test_a_measured_latency_is_never_shown_as_zero(latency_ms: float) -> None:
    shown = diag.format_latency(latency_ms)
    assert shown.endswith(" ms")
    assert float(shown.removesuffix(" ms")) > 0


def test_a_reading_carries_its_unit() -> None:
    assert diag.render_reading("weather.temperature", "read", 21.5, "°C") == (
        "weather.temperature: read 21.5 °C"
    )
    assert diag.render_reading("relay.ch1", "read", True, "") == "relay.ch1: read on"
    assert diag.render_reading("meter.v", "read", None, "V") == "meter.v: read -"


def test_plan_is_a_table_for_every_protocol() -> None:
    plan = {
        "rs485-1": {
            "meter": [
                {"kind": "input", "address": 0, "count": 32, "points": ["voltage", "current"]},
                {"kind": "input", "address": 342, "count": 2, "points": ["energy"]},
            ]
        },
        "dlt": {"tariff": [{"di": "00010000", "point": "energy"}]},
        "cabinet": {"mcu": ["heartbeat every 2 s"]},
        "ptz": {"dome": []},
    }
    lines = diag.render_plan(plan).splitlines()
    assert lines[0].split() == ["BUS", "DEVICE", "READ", "REGS", "POINTS"]
    rows = [line.split() for line in lines[2:]]
    assert rows[0] == ["rs485-1", "meter", "input", "0..31", "32", "voltage,", "current"]
    assert rows[1] == ["rs485-1", "meter", "input", "342..343", "2", "energy"]
    assert rows[2] == ["dlt", "tariff", "DI", "00010000", "energy"]
    assert rows[3] == ["cabinet", "mcu", "heartbeat", "every", "2", "s"]
    assert rows[4] == ["ptz", "dome", "(nothing", "to", "poll)"]
    assert diag.render_plan({}) == "no buses polled"


def test_the_plan_table_lists_what_each_device_taught_the_planner() -> None:
    plan = {
        "rs485-1": {
            "meter": [{"kind": "input", "address": 0, "count": 38, "points": ["voltage"]}],
            "(learnt)": {
                "meter": {
                    "max_per_read": {"input": 38},
                    "holes": [{"kind": "input", "at": 70}],
                    "unsupported": ["thd"],
                }
            },
        }
    }
    lines = diag.render_plan(plan).splitlines()
    assert lines[3].split() == [
        "rs485-1", "meter", "learnt", "at", "most", "38", "per", "input", "read;",
        "hole", "at", "input", "70;", "unsupported:", "thd",
    ]  # fmt: skip
    assert len(lines) == 4


def test_the_plan_table_says_why_a_read_was_capped() -> None:
    learnt = {
        "max_per_read": {"holding": 20, "input": 38},
        "max_per_read_reason": {"holding": "exception 3", "input": "timeout"},
        "holes": [],
        "unsupported": [],
    }
    plan = {"rs485-1": {"meter": [], "(learnt)": {"meter": learnt}}}
    row = diag.render_plan(plan).splitlines()[3]
    assert "at most 20 per holding read (exception 3); at most 38 per input read (timeout)" in row


def test_the_legend_tells_never_read_from_not_answering() -> None:
    assert "unknown = never read yet" in diag.QUALITY_LEGEND
    assert "(refused) = the device answered this point's read with an exception" in (
        diag.QUALITY_LEGEND
    )
    assert "(no answer)" in diag.QUALITY_LEGEND
    assert "(device refusing)" in diag.QUALITY_LEGEND


def _point(quality: str, reason: str | None) -> dict[str, object]:
    return {"device": "meter", "point": "voltage", "value": None, "unit": "V",
            "quality": quality, "age_s": None, "restored": False, "reason": reason}  # fmt: skip


def test_points_say_refused_by_the_device_apart_from_no_answer() -> None:
    rows = diag.render_points(
        [_point("bad", "refused"), _point("bad", "no answer"), _point("unknown", None)]
    ).splitlines()
    assert rows[2].split()[3:] == ["V", "bad", "(refused)", "never"]
    assert rows[3].split()[3:] == ["V", "bad", "(no", "answer)", "never"]
    assert rows[4].split()[3:] == ["V", "unknown", "never"]


def test_status_shows_each_bus_late_answers() -> None:
    counters: dict[str, object] = {"requests": 12, "mean_latency_ms": None}
    counters |= dict.fromkeys(
        ["timeout", "crc_error", "garbage", "wrong_unit", "wrong_function", "exception", "error"], 0
    )
    status = {
        "pole": "p1", "summary": "", "pid": 1, "uptime_s": 1.0, "config": "c",
        "buses": [{"name": "rs485-1", "endpoint": "/dev/ttyS1", "settings": "9600 8N1",
                   "state": "connected", "counters": counters, "utilisation": 0.0,
                   "last_error": None, "late_answers": 3, "stray_bytes": 33}],
        "devices": [{"name": "meter", "bus": "rs485-1", "address": "unit 1", "profile": "x",
                     "state": "refusing", "slow": False, "polls": 4, "counters": counters}],
    }  # fmt: skip
    lines = diag.render_status(status).splitlines()
    header = lines[lines.index("BUSES") + 1]
    end = header.index("LATE") + len("LATE")  # a right-aligned column
    assert lines[lines.index("BUSES") + 3][:end].split()[-1] == "3"
    assert "refusing" in lines[lines.index("DEVICES") + 3].split()
