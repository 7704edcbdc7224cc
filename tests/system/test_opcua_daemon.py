"""The daemon's OPC UA wiring: methods reach the real command processor, and ``diag uplink``
shows the server's counters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from asyncua import ua

from helpers.opcua import NAMESPACE, USER, WRONG_PASSWORD, Env, client_pki, connected
from helpers.ports import free_port
from helpers.processes import Proc, api, pole_config
from helpers.waiting import wait_until
from smartpole.agent.core.points import PointTable
from smartpole.agent.uplink.opcua_auth import password_entry


def _env(tmp_path: Path) -> tuple[Env, Path]:
    state = tmp_path / "state"
    (state / "opcua" / "trusted").mkdir(parents=True)
    keys = tmp_path / "client"
    keys.mkdir()
    trusted, untrusted = client_pki(keys, "scada"), client_pki(keys, "intruder")
    (state / "opcua" / "trusted" / "scada.der").write_bytes(trusted.cert.read_bytes())
    (state / "opcua" / "users").write_text(password_entry(USER, "pw", iterations=1000) + "\n")
    url = f"opc.tcp://127.0.0.1:{free_port()}/smartpole/"
    config = pole_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["opcua"] = {"endpoint": url, "login_free_failures": 1, "login_backoff_s": 60.0}
    data["uplink"] = {  # no broker: the uplink retries in the background, commands work
        "host": "127.0.0.1",
        "port": free_port(),
        "commands": {"allow": {USER: ["ack_alarm"]}},
    }
    config.write_text(yaml.safe_dump(data))
    return Env(state, url, PointTable(), trusted, untrusted, [0.0]), config


@pytest.mark.asyncio
async def test_methods_go_through_the_command_processor_and_status_shows_logins(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    env, config = _env(tmp_path)
    sim = simulator(config)
    proc = daemon(config, "--bus-port", f"rs485-1={sim.extra['rs485-1']}")
    wait_until(lambda: proc.events("opcua_started"), 15, "the OPC UA server")
    async with connected(env, password="pw") as client:  # noqa: S106 - a test credential
        idx = await client.get_namespace_index(NAMESPACE)
        commands = await client.nodes.objects.get_child([f"{idx}:test-pole", f"{idx}:Commands"])
        # The processor's allow-list admits the session's user for ack_alarm only.
        ack = await commands.call_method(f"{idx}:AckAlarm", "weather/none")
        assert ack == ["rejected", "no active alarm weather/none"]
        relay = await commands.call_method(f"{idx}:Relay", "weather", "relay1", True)
        assert relay == ["rejected", f"{USER} may not send relay"]
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        async with connected(env, password=WRONG_PASSWORD):
            pass
    status = api(proc, "uplink")["opcua"]
    assert status["methods_called"] == 2
    assert (status["login_failures"], status["throttled_peers"]) == (1, ["127.0.0.1"])
    wait_until(lambda: proc.events("opcua_login_throttling_started"), 5, "the throttle's log")
