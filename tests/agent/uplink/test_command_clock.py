"""The replay cache against a wall clock that steps: real HMAC signing, an injected clock.

The probe campaign's finding: a wall clock stepped two days forward, then a validly signed
(and stale) command, pruned every remembered id; once the clock came back a byte-identical
replay of an old command was answered ``ok`` and switched the relay again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers.clock import ManualClock
from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.uplink.command_auth import sign
from smartpole.agent.uplink.command_schema import canonical_json
from smartpole.agent.uplink.commands import CommandProcessor

KEY = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0
DAY = 86400.0


class Relay:
    """The executor: counts how often the relay was really switched."""

    def __init__(self) -> None:
        self.switched: list[tuple[str, str, bool, str]] = []

    async def relay(self, device: str, point: str, on: bool, actor: str) -> object:
        self.switched.append((device, point, on, actor))
        return on

    def __getattr__(self, name: str) -> Any:  # the other commands are not sent here
        raise AttributeError(name)


def signed(command_id: str, issued_at: float, *, on: bool = True) -> bytes:
    """A command as the platform signs it (docs/uplink.md): compact sorted JSON, HMAC-SHA256."""
    data: dict[str, Any] = {
        "id": command_id,
        "issued_at": issued_at,
        "actor": "ops-alice",
        "command": "relay",
        "args": {"device": "cabinet", "point": "lamp_circuit", "on": on},
    }
    data["signature"] = sign(KEY, canonical_json(data))
    return json.dumps(data).encode()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "command.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    return path


def processor(
    state: Path, key_file: Path, relay: Relay, clock: ManualClock, **config: Any
) -> CommandProcessor:
    settings = CommandsConfig.model_validate(
        {"allow": {"ops-*": ["relay"]}, "hmac_key_file": str(key_file), **config}
    )
    return CommandProcessor(settings, relay, AuditLog(state), state, clock=clock)  # type: ignore[arg-type]


async def reason(proc: CommandProcessor, raw: bytes) -> str:
    return str((await proc.handle(raw, source="mqtt"))["reason"])


@pytest.mark.asyncio
async def test_a_clock_jump_and_back_does_not_let_a_replay_run_again(
    tmp_path: Path, key_file: Path
) -> None:
    clock, relay = ManualClock(T0), Relay()
    proc = processor(tmp_path, key_file, relay, clock)
    old = signed("c-1", T0)
    assert await reason(proc, old) == "ok"
    clock.advance(30)

    clock.step(2 * DAY)  # a bad NTP answer: the pole now lives two days ahead
    # The platform's next command is stale on the pole's clock: refused, and prunes nothing.
    assert await reason(proc, signed("c-2", T0 + 40)) == "stale"
    # One the pole accepts (its sender's clock jumped too) makes room only for what has
    # aged on both clocks: c-1 is 30 s old on the monotonic one.
    assert await reason(proc, signed("c-3", clock.now)) == "ok"

    clock.step(-2 * DAY)  # the clock comes back
    assert await reason(proc, old) == "duplicate"  # byte-identical replay, inside the window
    assert relay.switched == [("cabinet", "lamp_circuit", True, "mqtt:ops-alice")] * 2
    assert proc.stats()["remembered_ids"] == 2

    # ... also after a restart, when the monotonic clock starts again from nothing.
    rebooted = ManualClock(clock.now, mono=5.0)
    again = processor(tmp_path, key_file, relay, rebooted)
    assert await reason(again, old) == "duplicate"
    assert len(relay.switched) == 2


@pytest.mark.asyncio
async def test_a_step_back_cannot_age_ids_and_real_time_does(
    tmp_path: Path, key_file: Path
) -> None:
    clock, relay = ManualClock(T0), Relay()
    proc = processor(tmp_path, key_file, relay, clock, dedupe_keep_s=600, max_skew_s=300)
    assert await reason(proc, signed("c-1", T0)) == "ok"
    clock.step(-DAY)  # wall clock a day back: the id is younger than ever on it
    clock.advance(601)
    assert await reason(proc, signed("c-2", clock.now)) == "ok"
    assert proc.stats()["remembered_ids"] == 2  # c-1 not forgotten: its wall time is ahead
    clock.step(DAY)
    clock.advance(1)
    assert await reason(proc, signed("c-3", clock.now)) == "ok"
    assert proc.stats()["remembered_ids"] == 2  # now 602 s on both clocks: c-1 is gone
    assert await reason(proc, signed("c-1", T0)) == "stale"  # and the window refuses it


@pytest.mark.asyncio
async def test_a_full_cache_refuses_new_commands_instead_of_forgetting_ids(
    tmp_path: Path, key_file: Path
) -> None:
    clock, relay = ManualClock(T0), Relay()
    proc = processor(tmp_path, key_file, relay, clock, max_remembered=100,
                     dedupe_keep_s=600, max_skew_s=300)  # fmt: skip
    for n in range(100):
        assert await reason(proc, signed(f"c-{n}", clock.now)) == "ok"
    assert await reason(proc, signed("c-new", clock.now)) == "replay_cache_full"
    clock.step(2 * DAY)  # a jump does not make room ...
    assert await reason(proc, signed("c-new", clock.now)) == "replay_cache_full"
    assert await reason(proc, signed("c-0", T0)) == "duplicate"  # ... nor forget c-0
    clock.step(-2 * DAY)
    clock.advance(601)  # ... time passing does
    assert await reason(proc, signed("c-new", clock.now)) == "ok"
    assert proc.stats()["ids_refused_cache_full"] == 2
    assert len(relay.switched) == 101


@pytest.mark.asyncio
async def test_an_id_forgotten_long_ago_cannot_run_again_when_the_clock_is_set_back(
    tmp_path: Path, key_file: Path
) -> None:
    """Ids must be forgotten some time; a wall clock set back past them must not revive them."""
    clock, relay = ManualClock(T0), Relay()
    proc = processor(tmp_path, key_file, relay, clock, dedupe_keep_s=600, max_skew_s=300)
    old = signed("c-1", T0)
    assert await reason(proc, old) == "ok"
    clock.advance(601)
    assert await reason(proc, signed("c-2", clock.now)) == "ok"  # c-1 is forgotten now
    assert proc.stats()["remembered_ids"] == 1
    clock.step(-601)  # an RTC reset puts the wall clock back to when c-1 was sent
    assert await reason(proc, old) == "stale"
    # ... also after a restart: the mark is kept with the ids.
    again = processor(tmp_path, key_file, relay, ManualClock(clock.now, mono=5.0))
    assert await reason(again, old) == "stale"
    assert len(relay.switched) == 2
    assert await reason(again, signed("c-3", clock.now + 1)) == "ok"  # newer ones still run
