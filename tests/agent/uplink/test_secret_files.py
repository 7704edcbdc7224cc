"""Files the uplinks read at run time (MQTT credentials, the command key, the OPC UA users)
refuse a FIFO or a device instead of blocking the event loop - and with it the lights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.waiting import eventually
from smartpole.agent.config.safefile import UnsafeFileError
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.uplink.command_auth import HmacKey, KeyUnavailableError
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.opcua_auth import load_users


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    os.mkfifo(path)
    return path


@pytest.mark.asyncio
async def test_a_fifo_as_the_mqtt_password_file_is_a_counted_failure(
    tmp_path: Path, fifo: Path
) -> None:
    config = UplinkConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": 9,  # never reached: the credentials are read first
            "backoff": {"initial_s": 0.2, "max_s": 0.5, "jitter": 0.0},
            "username_file": "user",
            "password_file": fifo.name,
        }
    )
    (tmp_path / "user").write_text("pole\n")
    with Outbox(tmp_path) as outbox:
        uplink = MqttUplink(config, pole_id="p", outbox=outbox, base_dir=tmp_path)
        async with uplink:
            await eventually(lambda: uplink.failures >= 1, what="a counted failure")
    assert f"cannot read password_file {fifo}: not a regular file" in str(uplink.last_error)


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_a_command_key_that_is_no_regular_file_is_unavailable(fifo: Path, target: str) -> None:
    path = fifo if target == "fifo" else Path(target)
    with pytest.raises(KeyUnavailableError, match="not a regular file"):
        HmacKey(path).check(b"message", "00")


def test_an_oversized_command_key_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "pole.key"
    path.write_bytes(b"k" * 100_000)
    with pytest.raises(KeyUnavailableError, match="larger than the limit"):
        HmacKey(path).check(b"message", "00")


def test_opcua_users_file_that_is_a_fifo_or_not_utf8(tmp_path: Path, fifo: Path) -> None:
    with pytest.raises(UnsafeFileError):
        load_users(fifo)
    users = tmp_path / "users"
    users.write_bytes(b"caf\xe9:pbkdf2_sha256$1000$c2FsdA==$ZGlnZXN0\nbob:pbkdf2_sha256$1$x$y\n")
    assert load_users(users) == {
        "caf\ufffd": "pbkdf2_sha256$1000$c2FsdA==$ZGlnZXN0",
        "bob": "pbkdf2_sha256$1$x$y",
    }
