"""The point table's quality and age rules, with clocks the test moves by hand."""

from __future__ import annotations

import json

import pytest

from smartpole.agent.core.points import PointSample, PointTable, Quality


class FakeClock:
    """Monotonic and wall clocks that only move when told; the wall clock may be stepped."""

    def __init__(self, mono: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.mono = mono
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def table(clock: FakeClock) -> PointTable:
    table = PointTable(monotonic=clock.monotonic, wall=clock.time)
    table.register("weather", "temperature", "°C", stale_after_s=10.0)
    table.register("weather", "humidity", "%RH", stale_after_s=10.0)
    table.register("meter", "voltage", "V", stale_after_s=5.0)
    return table


def sample(table: PointTable, device: str, point: str) -> PointSample:
    (found,) = [s for s in table.snapshot() if (s.device, s.point) == (device, point)]
    return found


def test_a_point_never_read_is_unknown_not_bad(table: PointTable) -> None:
    fresh = sample(table, "weather", "temperature")
    assert fresh == PointSample("weather", "temperature", None, "°C", Quality.UNKNOWN, None, None)


def test_update_makes_it_good_with_an_age(table: PointTable, clock: FakeClock) -> None:
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    read_at = clock.wall
    clock.advance(3.0)
    now = sample(table, "weather", "temperature")
    assert (now.value, now.quality, now.timestamp) == (24.6, Quality.GOOD, read_at)
    assert now.age_s == pytest.approx(3.0)
    assert sample(table, "weather", "humidity").quality is Quality.UNKNOWN


@pytest.mark.parametrize("quality", [Quality.GOOD, Quality.UNCERTAIN])
def test_turns_stale_after_stale_after(
    table: PointTable, clock: FakeClock, quality: Quality
) -> None:
    table.update("weather", "temperature", 24.6, quality)
    clock.advance(10.0)
    assert sample(table, "weather", "temperature").quality is quality  # exactly at the limit
    clock.advance(0.001)
    late = sample(table, "weather", "temperature")
    assert late.quality is Quality.STALE
    assert late.value == 24.6
    table.update("weather", "temperature", 24.7, quality)
    assert sample(table, "weather", "temperature").quality is quality


def test_stale_after_is_per_point(table: PointTable, clock: FakeClock) -> None:
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    table.update("meter", "voltage", 230.2, Quality.GOOD)
    clock.advance(7.0)
    assert sample(table, "weather", "temperature").quality is Quality.GOOD
    assert sample(table, "meter", "voltage").quality is Quality.STALE


def test_age_uses_the_monotonic_clock(table: PointTable, clock: FakeClock) -> None:
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    clock.wall -= 3600  # NTP steps the wall clock back an hour
    clock.mono += 2.0
    now = sample(table, "weather", "temperature")
    assert now.age_s == pytest.approx(2.0)
    assert now.quality is Quality.GOOD


def test_mark_bad_keeps_the_value(table: PointTable, clock: FakeClock) -> None:
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    table.update("meter", "voltage", 230.2, Quality.GOOD)
    read_at = clock.wall
    clock.advance(1.0)
    table.mark_bad("weather")
    bad = sample(table, "weather", "temperature")
    assert (bad.value, bad.quality, bad.timestamp) == (24.6, Quality.BAD, read_at)
    assert bad.age_s == pytest.approx(1.0)
    # Never read: it had no value to lose; unknown, not "the device stopped answering".
    assert sample(table, "weather", "humidity").quality is Quality.UNKNOWN
    assert sample(table, "meter", "voltage").quality is Quality.GOOD
    clock.advance(100.0)
    assert sample(table, "weather", "temperature").quality is Quality.BAD


def test_restore_gives_a_stale_value_with_its_age(table: PointTable, clock: FakeClock) -> None:
    saved_at = clock.wall - 4.0
    table.restore("weather", "temperature", 21.0, saved_at)
    restored = sample(table, "weather", "temperature")
    assert (restored.value, restored.quality, restored.timestamp) == (
        21.0,
        Quality.STALE,
        saved_at,
    )
    assert restored.age_s == pytest.approx(4.0)
    clock.advance(2.0)
    assert sample(table, "weather", "temperature").age_s == pytest.approx(6.0)


def test_restore_from_the_future_has_age_zero(table: PointTable, clock: FakeClock) -> None:
    table.restore("weather", "temperature", 21.0, clock.wall + 60)
    restored = sample(table, "weather", "temperature")
    assert restored.quality is Quality.STALE
    assert restored.age_s == 0.0


def test_restore_never_overwrites_a_live_reading(table: PointTable, clock: FakeClock) -> None:
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    read_at = clock.wall
    table.restore("weather", "temperature", 21.0, clock.wall - 4.0)
    live = sample(table, "weather", "temperature")
    assert (live.value, live.quality, live.timestamp) == (24.6, Quality.GOOD, read_at)
    # ...not even once the live reading is bad: it is still newer than any saved value.
    table.mark_bad("weather")
    table.restore("weather", "temperature", 21.0, clock.wall - 4.0)
    assert sample(table, "weather", "temperature").value == 24.6


def test_restore_then_update_goes_live(table: PointTable) -> None:
    table.restore("weather", "temperature", 21.0, 1.0)
    assert sample(table, "weather", "temperature").restored is True
    assert sample(table, "weather", "temperature").to_json()["restored"] is True
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    assert sample(table, "weather", "temperature").quality is Quality.GOOD
    assert sample(table, "weather", "temperature").restored is False


def test_a_block_read_ends_restored_too(table: PointTable) -> None:
    table.restore("weather", "temperature", 21.0, 1.0)
    table.restore("weather", "humidity", 40.0, 1.0)
    table.update_many("weather", [("temperature", 22.0, Quality.GOOD)])
    assert sample(table, "weather", "temperature").restored is False
    assert sample(table, "weather", "humidity").restored is True  # not read again yet


def test_mark_bad_hands_block_listeners_no_value_at_the_time_of_the_change(
    table: PointTable, clock: FakeClock
) -> None:
    """A quality change is no reading: the old value must not travel with a new time.
    Per-point listeners (safety, OPC UA status) still get the last value."""
    blocks: list[tuple[str, list[tuple[str, object, Quality]], float]] = []
    points: list[tuple[str, str, object, Quality, float]] = []
    table.listen_blocks(lambda device, readings, at: blocks.append((device, list(readings), at)))
    table.listen(lambda device, point, value, quality, at: points.append(
        (device, point, value, quality, at)))  # fmt: skip
    table.restore("weather", "humidity", 40.0, clock.wall - 100.0)
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    blocks.clear()
    points.clear()
    clock.advance(5.0)
    table.mark_bad("weather")
    assert blocks == [
        ("weather", [("temperature", None, Quality.BAD), ("humidity", None, Quality.BAD)],
         clock.wall),
    ]  # fmt: skip
    assert ("weather", "temperature", 24.6, Quality.BAD, clock.wall) in points
    # The table keeps the value and its real acquisition time for people and integrity.
    kept = sample(table, "weather", "temperature")
    assert (kept.value, kept.timestamp) == (24.6, clock.wall - 5.0)


def test_restore_of_an_unknown_point_is_ignored(table: PointTable) -> None:
    before = table.snapshot()
    table.restore("weather", "no_such_point", 1.0, 1.0)
    table.restore("no_such_device", "temperature", 1.0, 1.0)
    assert table.snapshot() == before


def test_to_json_shape(table: PointTable, clock: FakeClock) -> None:
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    read_at = clock.wall
    clock.advance(1.23456)
    good = sample(table, "weather", "temperature").to_json()
    assert good == {
        "device": "weather",
        "point": "temperature",
        "value": 24.6,
        "unit": "°C",
        "quality": "good",
        "timestamp": read_at,
        "age_s": 1.235,
        "restored": False,
        "reason": None,
    }
    assert json.loads(json.dumps(good)) == good
    empty = sample(table, "weather", "humidity").to_json()
    assert empty == {
        "device": "weather",
        "point": "humidity",
        "value": None,
        "unit": "%RH",
        "quality": "unknown",
        "timestamp": None,
        "age_s": None,
        "restored": False,
        "reason": None,
    }


def test_devices_in_registration_order(table: PointTable) -> None:
    assert list(table.devices()) == ["weather", "meter"]


def test_snapshot_covers_every_registered_point(table: PointTable) -> None:
    assert [(s.device, s.point) for s in table.snapshot()] == [
        ("weather", "temperature"),
        ("weather", "humidity"),
        ("meter", "voltage"),
    ]


def test_a_reason_says_why_and_a_points_own_outlasts_its_devices(table: PointTable) -> None:
    table.update("weather", "temperature", 24.6, Quality.GOOD)
    table.mark_point_bad("weather", "humidity", "refused")
    table.mark_bad("weather", "no answer")
    temperature = sample(table, "weather", "temperature")
    humidity = sample(table, "weather", "humidity")
    assert (temperature.quality, temperature.reason) == (Quality.BAD, "no answer")
    assert (humidity.quality, humidity.reason) == (Quality.BAD, "refused")
    assert temperature.to_json()["reason"] == "no answer"
    table.mark_bad("meter", "device refusing")  # never read: unknown still, with why
    voltage = sample(table, "meter", "voltage")
    assert (voltage.quality, voltage.reason) == (Quality.UNKNOWN, "device refusing")
    table.update("weather", "humidity", 40.0, Quality.GOOD)
    table.update_many("weather", [("temperature", 25.0, Quality.GOOD)])
    assert sample(table, "weather", "humidity").reason is None
    assert sample(table, "weather", "temperature").reason is None
