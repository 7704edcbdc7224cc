"""A device's health states: offline versus faulty, slow and its probation, logged once."""

from __future__ import annotations

import structlog

from smartpole.agent.core.health import SLOW_AFTER, SLOW_WINDOW, DeviceHealth, DeviceState


def _device(offline_after: int = 3) -> DeviceHealth:
    return DeviceHealth("meter", "rs485-1", "unit 3", "meter-profile", offline_after)


def test_garbage_makes_a_device_faulty_silence_makes_it_offline() -> None:
    garbling, silent = _device(), _device()
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            garbling.poll_failed("corrupt reply (CRC error)", garbled=True)
            silent.poll_failed("no answer")
    assert garbling.state is DeviceState.FAULTY
    assert garbling.down
    assert silent.state is DeviceState.OFFLINE
    assert silent.down
    # Once each, not once per poll.
    assert sum(e["event"] == "device_faulty" for e in logs) == 1
    assert sum(e["event"] == "device_offline" for e in logs) == 1


def test_exceptions_make_a_device_refusing_not_offline_and_it_clears_once() -> None:
    refusing, emptied = _device(), _device()
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):  # offline_after, and not yet slow (SLOW_AFTER)
            refusing.poll_failed("unit 3 answered exception 4", refused=True)
        # every point refused one by one: no episode to wait out
        emptied.poll_failed("refused every point", refused=True, at_once=True)
        assert emptied.state is DeviceState.REFUSING
        refusing.poll_succeeded()
    assert refusing.state is DeviceState.ONLINE
    assert emptied.down
    assert [e["event"] for e in logs if e["event"].startswith("device_")] == [
        "device_refusing", "device_refusing", "device_slow", "device_online"
    ]  # fmt: skip
    assert logs[-1]["was"] == "refusing"


def test_a_device_that_fails_often_is_slow_until_a_window_of_clean_polls() -> None:
    device = _device(offline_after=100)
    with structlog.testing.capture_logs() as logs:
        for _ in range(SLOW_AFTER):
            device.poll_succeeded()
            device.poll_failed("no answer")
        assert device.slow
        assert device.state is DeviceState.ONLINE  # failing now and then, never in a row
        for _ in range(SLOW_WINDOW - 1):
            device.poll_succeeded()
        assert device.slow
        device.poll_succeeded()
        assert not device.slow
    events = [e["event"] for e in logs if e["event"].startswith("device_slow")]
    assert events == ["device_slow", "device_slow_cleared"]


def test_a_device_back_from_offline_is_on_probation() -> None:
    device = _device()
    for _ in range(3):
        device.poll_failed("no answer")
    with structlog.testing.capture_logs() as logs:
        device.poll_succeeded()
    assert device.state is DeviceState.ONLINE
    assert device.slow
    online = next(e for e in logs if e["event"] == "device_online")
    assert online["was"] == "offline"
    assert device.to_json()["slow"] is True
