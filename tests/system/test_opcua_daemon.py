"""The daemon's OPC UA wiring: methods reach the real command processor, are audited and
answered on ``cmd/result`` like MQTT commands (checked with paho and jsonschema, which we
did not write, against the published schema), and ``diag uplink`` shows the server's
counters."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as paho
import pytest
import yaml
from asyncua import ua

from helpers.broker import Broker
from helpers.opcua import NAMESPACE, USER, WRONG_PASSWORD, Env, client_pki, connected
from helpers.ports import free_port
from helpers.processes import Proc, api, pole_config
from helpers.waiting import wait_until
from smartpole.agent.core.points import PointTable
from smartpole.agent.uplink.opcua_auth import password_entry

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "uplink" / "command-result.schema.json"


class Results:
    """Every payload on the pole's cmd/result topic, as received by paho."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.payloads: list[dict[str, Any]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *_: client.subscribe(
            "smartpole/v1/test-pole/cmd/result", qos=1
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        with self.lock:
            self.payloads.append(json.loads(message.payload))

    def of(self, command_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.payloads if p.get("data", {}).get("id") == command_id]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _env(tmp_path: Path, broker_port: int | None = None) -> tuple[Env, Path]:
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
    data["uplink"] = {  # without a broker the uplink retries in the background
        "host": "127.0.0.1",
        "port": broker_port or free_port(),
        "commands": {"allow": {USER: ["ack_alarm"]}},
    }
    config.write_text(yaml.safe_dump(data))
    return Env(state, url, PointTable(), trusted, untrusted, [0.0]), config


@pytest.mark.asyncio
async def test_methods_go_through_the_command_processor_and_status_shows_logins(
    tmp_path: Path, simulator: Callable[..., Proc], daemon: Callable[..., Proc]
) -> None:
    with Broker(tmp_path / "broker") as broker:
        env, config = _env(tmp_path, broker.port)
        results = Results(broker.port)
        try:
            sim = simulator(config)
            proc = daemon(config, "--bus-port", f"rs485-1={sim.extra['rs485-1']}")
            wait_until(lambda: proc.events("opcua_started"), 15, "the OPC UA server")
            async with connected(env, password="pw") as client:  # noqa: S106 - a test credential
                idx = await client.get_namespace_index(NAMESPACE)
                commands = await client.nodes.objects.get_child(
                    [f"{idx}:test-pole", f"{idx}:Commands"]
                )
                # The processor's allow-list admits the session's user for ack_alarm only.
                ack = await commands.call_method(f"{idx}:AckAlarm", "weather/none")
                assert ack == ["rejected", "no active alarm weather/none", "opcua-1"]
                relay = await commands.call_method(f"{idx}:Relay", "weather", "relay1", True)
                assert relay == ["rejected", f"{USER} may not send relay", "opcua-2"]
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                async with connected(env, password=WRONG_PASSWORD):
                    pass
            status = api(proc, "uplink")["opcua"]
            assert status["methods_called"] == 2
            assert (status["login_failures"], status["throttled_peers"]) == (1, ["127.0.0.1"])
            wait_until(lambda: proc.events("opcua_login_throttling_started"), 5, "the throttle")

            # Each call is answered on cmd/result, in the published shape, with who called.
            wait_until(lambda: results.of("opcua-1") and results.of("opcua-2"), 15, "answers")
            schema = json.loads(SCHEMA.read_text())
            validator = jsonschema.Draft202012Validator(
                schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            )
            (first,), (second,) = results.of("opcua-1"), results.of("opcua-2")
            for payload in (first, second):
                errors = [e.message for e in validator.iter_errors(payload)]
                assert not errors, (payload, errors)
            assert {k: first["data"][k] for k in ("command", "status", "reason", "actor")} == {
                "command": "ack_alarm", "status": "rejected", "reason": "refused",
                "actor": f"opcua:{USER}",
            }  # fmt: skip
            assert (second["data"]["command"], second["data"]["reason"]) == ("relay", "not_allowed")
            # ... and audited as the session's user, under the same id.
            audit = [r for r in api(proc, "audit") if str(r.get("command_id")).startswith("opcua-")]
            assert [(r["actor"], r["action"], r["command_id"]) for r in audit] == [
                (f"opcua:{USER}", "ack_alarm", "opcua-1"),
                (f"opcua:{USER}", "relay", "opcua-2"),
            ]
        finally:
            results.close()
