"""The daemon as a real process against the simulator over a real pseudo-terminal."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from helpers.processes import Proc, api, pole_config
from helpers.waiting import wait_until
from smartpole.agent.state import FILE_NAME

WEATHER_POINTS = {
    "wind_speed", "wind_force", "wind_sector", "wind_direction", "humidity", "temperature",
    "noise", "pm2_5", "pm10", "pressure", "illuminance", "rainfall",
}  # fmt: skip


def _points(proc: Proc) -> dict[str, dict[str, object]]:
    return {p["point"]: p for p in api(proc, "points")}


def _device(proc: Proc) -> dict[str, object]:
    (device,) = api(proc, "status")["devices"]
    return device


def test_polls_simulator_and_stops_cleanly_on_sigterm(
    tmp_path: Path, polled_pole: Callable[..., Proc]
) -> None:
    run = polled_pole()

    def all_good() -> dict[str, dict[str, object]] | None:
        points = _points(run)
        return points if all(p["quality"] == "good" for p in points.values()) else None

    points = wait_until(all_good, 10, "every point to read good")
    assert set(points) == WEATHER_POINTS
    # The simulator starts from the profile's simulation section; values drift by at most
    # a few steps, so they stay close to where they started and carry the profile's units.
    assert points["temperature"]["unit"] == "°C"
    assert 20 <= float(points["temperature"]["value"]) <= 30  # type: ignore[arg-type]
    assert points["pressure"]["unit"] == "kPa"
    assert 95 <= float(points["pressure"]["value"]) <= 105  # type: ignore[arg-type]
    assert isinstance(points["illuminance"]["value"], int)
    assert all(p["age_s"] is not None and p["timestamp"] for p in points.values())

    status = api(run, "status")
    assert status["pole"] == "test-pole"
    assert status["buses"][0]["state"] == "connected"
    assert _device(run)["state"] == "online"
    assert status["problems"] == []

    code, took = run.stop()
    assert code == 0
    assert took < 5.0
    assert not Path(run.extra["socket"]).exists(), "the API socket was not removed"
    assert (tmp_path / "state" / FILE_NAME).is_file(), "last values were not flushed"
    assert run.events("daemon_stopped")
    assert not [e for e in run.events() if e.get("level") == "error"]


def test_sigint_also_stops_cleanly(polled_pole: Callable[..., Proc]) -> None:
    run = polled_pole()
    wait_until(lambda: _device(run)["state"] == "online", 10, "device online")
    run.process.send_signal(2)
    assert run.process.wait(timeout=5) == 0


def test_restart_shows_last_values_as_stale(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    config = pole_config(tmp_path)
    sim = simulator(config)
    first = daemon(config, "--bus-port", f"rs485-1={sim.extra['rs485-1']}")
    wait_until(lambda: _points(first)["humidity"]["quality"] == "good", 10, "a good reading")
    assert first.stop()[0] == 0
    before = _points_from_state(tmp_path)

    # Restart without the simulator: nothing new can be read, so what the table shows must
    # be the saved value with its original time, and never as good.
    second = daemon(config)
    humidity = _points(second)["humidity"]
    assert (humidity["value"], humidity["timestamp"]) == before["humidity"]
    assert humidity["quality"] in ("stale", "bad")
    assert second.stop()[0] == 0


def _points_from_state(tmp_path: Path) -> dict[str, tuple[object, object]]:
    saved = json.loads((tmp_path / "state" / FILE_NAME).read_text())
    return {p["point"]: (p["value"], p["timestamp"]) for p in saved["points"]}


def test_missing_serial_port_is_reported_once_and_survived(
    tmp_path: Path, daemon: Callable[..., Proc]
) -> None:
    missing = str(tmp_path / "no-such-tty")
    run = daemon(pole_config(tmp_path, port=missing))
    # The bus retries with backoff (1 s, 2 s, ...); two failed attempts prove it keeps trying.
    wait_until(
        lambda: (
            len(run.events("bus_port_unavailable")) >= 1
            and api(run, "status")["buses"][0]["state"] == "port_unavailable"
        ),
        10,
        "the port problem to show",
    )
    status = api(run, "status")
    assert any(missing in problem for problem in status["problems"])
    # Never read: unknown, not bad; and a device behind a missing port is offline.
    assert all(p["quality"] == "unknown" for p in _points(run).values())
    assert _device(run)["state"] == "offline"
    wait_until(lambda: "weather" in str(api(run, "status")), 3)
    assert run.process.poll() is None, "the daemon must keep running without its port"
    assert len(run.events("bus_port_unavailable")) == 1, "logged more than once"
    assert not [e for e in run.events() if "exception" in e], "a traceback was logged"
    assert run.stop()[0] == 0


@pytest.mark.parametrize(
    ("fault", "counter", "state"),
    [
        ("no_answer", "timeout", "offline"),
        # Something comes back, but no sound answer: faulty (wiring, firmware), not offline.
        ("garbage", "garbage", "faulty"),
        ("bad_crc", "crc_error", "faulty"),
        # It answers, with exception 4 to every read: alive, refusing, not offline.
        ("exception", "exception", "refusing"),
    ],
)
def test_dead_or_garbled_device_goes_offline_or_faulty_once(
    polled_pole: Callable[..., Proc], fault: str, counter: str, state: str
) -> None:
    run = polled_pole("--fault", f"weather={fault}")
    device = wait_until(
        lambda: (d := _device(run))["state"] == state and d["polls"] >= 4 and d,
        15,
        f"the device to go {state} and be probed again",
    )
    # Each failure is counted for what it was, not lumped together as a timeout (a reply
    # that a loaded machine delivers after the timeout is, honestly, a timeout).
    counts = device["counters"]
    assert counts[counter] >= 3
    assert counts["ok"] == 0
    assert counts["requests"] == counts[counter] + (
        counts["timeout"] if counter != "timeout" else 0
    )
    assert all(p["quality"] == "unknown" for p in _points(run).values())  # never read
    problems = api(run, "status")["problems"]
    assert any("weather" in p and state in p for p in problems), problems
    assert len(run.events(f"device_{state}")) == 1, f"{state} must be logged once, not per poll"
    assert not [e for e in run.events() if "exception" in e], "a traceback was logged"
    assert run.process.poll() is None
    assert run.stop()[0] == 0


def test_device_exception_is_counted(polled_pole: Callable[..., Proc]) -> None:
    run = polled_pole("--fault", "weather=exception")
    device = wait_until(
        lambda: (d := _device(run))["counters"]["exception"] >= 2 and d, 10, "exceptions"
    )
    assert "exception 4" in str(device["last_error"])
    assert run.stop()[0] == 0


def test_notify_protocol_on_a_real_datagram_socket(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    config = pole_config(tmp_path)
    sim = simulator(config)
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        sock.settimeout(10)
        env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
        run = daemon(config, "--bus-port", f"rs485-1={sim.extra['rs485-1']}", env=env)

        messages: list[tuple[float, str]] = []

        def receive_until(predicate: Callable[[str], bool]) -> None:
            while True:
                text = sock.recv(4096).decode()
                messages.append((time.monotonic(), text))
                if predicate(text):
                    return

        receive_until(lambda text: "READY=1" in text)
        receive_until(lambda text: text.startswith("STATUS=") and "1/1 devices online" in text)
        watchdog_before = sum(text == "WATCHDOG=1" for _, text in messages)
        while sum(text == "WATCHDOG=1" for _, text in messages) < watchdog_before + 3:
            receive_until(lambda text: text == "WATCHDOG=1")
        run.process.send_signal(15)
        receive_until(lambda text: "STOPPING=1" in text)
        assert run.process.wait(timeout=5) == 0

    texts = [text for _, text in messages]
    assert texts.index("READY=1") < texts.index("STOPPING=1")
    assert texts[0] == "READY=1", "READY=1 must be the first notification"
    pings = [at for at, text in messages if text == "WATCHDOG=1"]
    gaps = [b - a for a, b in pairwise(pings)]
    # Pings come at half of WATCHDOG_USEC: never as late as the watchdog's full second.
    assert gaps
    assert max(gaps) < 1.0, gaps
    assert min(gaps) > 0.2, gaps
