"""One bus, several devices: a dead or slow neighbour costs little, refusals are learnt once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from helpers.paths import PROFILES
from helpers.processes import Proc, api, bus_ports
from helpers.waiting import wait_until

PERIOD_S = 0.3
TIMEOUT_S = 0.15
LISTEN_WINDOW_S = 0.6  # the RTU bus's default listen_window_s


def _config(
    tmp_path: Path,
    name: str,
    devices: dict[str, dict[str, object]],
    profiles: Path,
    **more: object,
) -> Path:
    data = {
        "pole": {"id": "test-pole"},
        "profiles_dir": str(profiles),
        "buses": {"rs485-1": {"type": "modbus-rtu", "port": "/dev/null", "timeout_s": TIMEOUT_S}},
        "devices": devices,
        **more,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _device(status: dict[str, object], name: str) -> dict[str, object]:
    return next(d for d in status["devices"] if d["name"] == name)  # type: ignore[attr-defined]


def test_a_dead_device_costs_its_neighbours_at_most_its_probe_budget(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    station = {"profile": "cwt-uwd", "bus": "rs485-1", "poll_period_s": PERIOD_S}
    config = _config(
        tmp_path,
        "pole.yaml",
        {
            "good": {**station, "unit_id": 1},
            "dead": {**station, "unit_id": 2, "offline_after": 2, "offline_probe_s": 2.0},
        },
        PROFILES,
    )
    sim = simulator(config, "--fault", "dead=no_answer")
    run = daemon(config, *bus_ports(sim))

    def settled() -> dict[str, object] | None:
        status = api(run, "status")
        dead, good = _device(status, "dead"), _device(status, "good")
        # Offline, then probed at least twice more, while the good one polled 20 times.
        if (
            dead["state"] == "offline"
            and dead["polls"] >= 5
            and len(good["recent_poll_intervals_s"]) == 20
        ):
            return status
        return None

    status = wait_until(settled, 30, "the dead device to be offline and probed")
    good, dead = _device(status, "good"), _device(status, "dead")
    # Once offline, a probe is one request with no retry: the good device waits at most
    # its period plus what one unanswered request costs the line (its reply timeout, or the
    # rest for listening devices after it, whichever is longer) and a little slack.
    budget = PERIOD_S + max(TIMEOUT_S, LISTEN_WINDOW_S) + 0.05
    assert max(good["recent_poll_intervals_s"]) <= budget, good["recent_poll_intervals_s"]
    assert good["state"] == "online"
    assert good["counters"]["timeout"] == 0
    # A device that never answered gets no retries: every poll, before it went offline
    # and since, is one request, and the probes back off far beyond the poll period.
    assert dead["counters"]["requests"] == dead["polls"]
    assert dead["recent_poll_intervals_s"][-1] >= 4 * PERIOD_S
    assert run.stop()[0] == 0


def test_a_refused_merged_read_is_split_and_remembered(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    # The agent's profile claims the station may be read across 0x0200; the real device
    # (the simulator's profile) refuses that register: the agent must learn it.
    device_truth = tmp_path / "truth"
    device_truth.mkdir()
    agent_view = tmp_path / "agent"
    agent_view.mkdir()
    original = (PROFILES / "cwt-uwd.yaml").read_text()
    (device_truth / "cwt-uwd.yaml").write_text(original.replace("max_gap: 1 ", "max_gap: 0 "))
    (agent_view / "cwt-uwd.yaml").write_text(original)
    device = {
        "weather": {"profile": "cwt-uwd", "bus": "rs485-1", "unit_id": 1, "poll_period_s": 0.2}
    }
    sim = simulator(_config(tmp_path, "truth.yaml", device, device_truth))
    run = daemon(_config(tmp_path, "agent.yaml", device, agent_view), *bus_ports(sim))

    def all_good() -> bool:
        return all(p["quality"] == "good" for p in api(run, "points"))

    wait_until(all_good, 10, "every point good after the split")
    (first, second) = api(run, "plan")["rs485-1"]["weather"]
    assert (first["address"], first["count"]) == (0x01F4, 12)
    assert (second["address"], second["count"]) == (0x0201, 1)
    refusals = _device(api(run, "status"), "weather")["counters"]["exception"]
    assert refusals == 1
    polls = _device(api(run, "status"), "weather")["polls"]
    wait_until(lambda: _device(api(run, "status"), "weather")["polls"] >= polls + 5, 10)
    # Remembered: no further refusals once the plan is right.
    assert _device(api(run, "status"), "weather")["counters"]["exception"] == refusals
    assert len(run.events("read_split")) == 1
    assert run.stop()[0] == 0


def test_a_slow_weather_station_raises_no_false_leakage_sensor_lost(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    # The field finding: a weather station answering late on the cabinet monitor's bus
    # took the monitor offline and raised leakage_sensor_lost. The station's late answers
    # go out on the shared pair whenever they are ready (the simulator's SLOW fault).
    config = _config(
        tmp_path,
        "pole.yaml",
        {
            "cabinet": {
                "profile": "cabinet-monitor",
                "bus": "rs485-1",
                "unit_id": 9,
                "poll_period_s": 0.2,
            },
            "weather": {
                "profile": "cwt-uwd",
                "bus": "rs485-1",
                "unit_id": 1,
                "poll_period_s": PERIOD_S,
                "offline_probe_s": 10,
            },
        },
        PROFILES,
        alarms={
            "leakage": {
                "severity": "critical",
                "raise_above": 30,
                "clear_below": 10,
                "stale_after_s": 1.5,
                "sources": ["cabinet.leakage"],
            }
        },
    )
    sim = simulator(config, "--fault", "weather=slow")
    run = daemon(config, *bus_ports(sim))

    def polled_enough() -> dict[str, object] | None:
        status = api(run, "status")
        return status if _device(status, "cabinet")["polls"] >= 40 else None

    status = wait_until(polled_enough, 30, "the cabinet monitor to be polled 40 times")
    raised = [e.get("alarm_id") for e in run.events("alarm_raised")]
    assert raised == [], raised
    assert api(run, "alarms")["active"] == []
    cabinet, weather = _device(status, "cabinet"), _device(status, "weather")
    assert cabinet["state"] == "online", cabinet
    assert {e["device"] for e in run.events("device_offline")} <= {"weather"}
    # The station is polled on its own budget: slow, one request per backed-off poll.
    assert weather["slow"] is True, weather
    assert weather["counters"]["requests"] <= cabinet["polls"] / 4, weather
    assert run.stop()[0] == 0
