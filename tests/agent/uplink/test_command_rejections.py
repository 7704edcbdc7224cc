"""Junk commands: audited as unauthenticated under the actor they claim, and never a flood.

The probe campaign's finding: every rejected command was one audit record (and one warning)
under the actor the payload *named*, with no limit, so junk filled the disk and the log and
the trail blamed whoever the sender chose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from helpers.clock import ManualClock
from helpers.waiting import eventually
from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.clock import Clock
from smartpole.agent.uplink.command_auth import sign
from smartpole.agent.uplink.command_schema import canonical_json
from smartpole.agent.uplink.commands import CommandProcessor

KEY = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0


class Relay:
    def __init__(self) -> None:
        self.switched = 0

    async def relay(self, device: str, point: str, on: bool, actor: str) -> object:
        self.switched += 1
        return on


def command(command_id: str, issued_at: float, *, key: bytes | None = KEY, **extra: Any) -> bytes:
    data: dict[str, Any] = {
        "id": command_id,
        "issued_at": issued_at,
        "actor": "ops-alice",
        "command": "relay",
        "args": {"device": "cabinet", "point": "lamp_circuit", "on": True},
        **extra,
    }
    if key is not None:
        data["signature"] = sign(key, canonical_json(data))
    return json.dumps(data).encode()


def make(tmp_path: Path, clock: Clock, relay: Relay, **config: Any) -> CommandProcessor:
    key_file = tmp_path / "command.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    settings = CommandsConfig.model_validate(
        {"allow": {"ops-*": ["relay"]}, "hmac_key_file": str(key_file), **config}
    )
    return CommandProcessor(settings, relay, AuditLog(tmp_path), tmp_path, clock=clock)  # type: ignore[arg-type]


def junk(n: int, now: float) -> bytes:
    """One of five kinds of junk, each claiming to be ops-alice (or nobody)."""
    kind = n % 5
    if kind == 0:
        return command(f"j-{n}", now, key=b"not the pole's key, but long enough")
    if kind == 1:
        return command(f"j-{n}", now, key=None)  # unsigned
    if kind == 2:
        return command(f"j-{n}", now - 3600)  # validly signed, but an hour old
    if kind == 3:
        return command("c-1", now)  # a replay of a command that ran
    return b'{"actor": "ops-alice", "command": "relay", "args": '  # not even JSON


@pytest.mark.asyncio
async def test_a_flood_of_junk_is_audited_as_unauthenticated_and_bounded(
    tmp_path: Path,
) -> None:
    clock, relay = ManualClock(T0), Relay()
    proc = make(tmp_path, clock, relay, rejections_audited_per_s=0.2, rejections_audited_burst=20)
    assert (await proc.handle(command("c-1", T0), source="mqtt"))["status"] == "ok"
    with structlog.testing.capture_logs() as logs:
        for n in range(5000):
            result = await proc.handle(junk(n, clock.now), source="mqtt")
            assert result["status"] in ("rejected", "duplicate")  # every one still answered
            clock.advance(0.001)
    assert relay.switched == 1

    records = AuditLog(tmp_path).tail(10_000)
    assert len(records) == 1 + 20  # the command that ran, then the burst of rejections
    assert records[0]["actor"] == "mqtt:ops-alice"
    junk_records = records[1:]
    assert {r["actor"] for r in junk_records} == {"unauthenticated"}
    assert {r["claimed_actor"] for r in junk_records} == {"mqtt:ops-alice", None}
    events = [entry["event"] for entry in logs]
    assert events.count("command_rejected") + events.count("command_duplicate") == 20
    assert events.count("command_rejections_throttled") == 1
    stats = proc.stats()
    assert stats["rejections_not_audited"] == 4980
    assert stats["by_reason"] == {
        "ok": 1, "bad_signature": 1000, "missing_signature": 1000, "stale": 1000,
        "duplicate": 1000, "bad_json": 1000,
    }  # fmt: skip

    # Quiet for a while: the next rejection first closes the episode with one summary.
    clock.advance(61)
    with structlog.testing.capture_logs() as logs:
        await proc.handle(junk(0, clock.now), source="mqtt")
    assert [e["event"] for e in logs].count("command_rejections_throttling_ended") == 1
    summary, last = AuditLog(tmp_path).tail(2)
    assert (summary["actor"], summary["action"]) == ("unauthenticated", "rejected_commands")
    requested = summary["requested"]
    assert isinstance(requested, dict)
    assert requested["not_audited"] == 4980
    assert requested["claimed_actors"] == {"mqtt:ops-alice": 3984, "(none)": 996}
    assert (last["actor"], last["claimed_actor"]) == ("unauthenticated", "mqtt:ops-alice")
    assert str(last["error"]).startswith("bad_signature:")


@pytest.mark.asyncio
async def test_an_episode_ends_with_its_summary_even_if_nothing_follows(
    tmp_path: Path,
) -> None:
    # The bucket runs on a clock that does not move during the burst (on a busy machine
    # real time would refill a token between two commands); the timer is the loop's own.
    clock = ManualClock(T0)
    proc = make(tmp_path, clock, Relay(), rejections_audited_per_s=50,
                rejections_audited_burst=2)  # fmt: skip
    for n in range(10):
        await proc.handle(junk(0, clock.now + n), source="mqtt")
    audit = AuditLog(tmp_path)
    assert len(audit.tail(100)) == 2
    # The episode ends 1 s after the last refusal, by a timer: no command follows.
    clock.advance(1.0)
    await eventually(lambda: len(audit.tail(100)) == 3, 5.0, "the episode's summary")
    summary = audit.tail(1)[0]
    assert summary["action"] == "rejected_commands"
    assert isinstance(summary["requested"], dict)
    assert summary["requested"]["not_audited"] == 8


@pytest.mark.asyncio
async def test_a_signed_command_refused_by_the_allow_list_keeps_its_actor(
    tmp_path: Path,
) -> None:
    """A good signature inside the window vouches for the actor: that refusal is not junk."""
    clock = ManualClock(T0)
    proc = make(tmp_path, clock, Relay())
    data = json.loads(command("c-9", T0))
    data.pop("signature")
    data["actor"] = "guest"
    data["signature"] = sign(KEY, canonical_json(data))
    result = await proc.handle(json.dumps(data).encode(), source="mqtt")
    assert result["reason"] == "not_allowed"
    (record,) = AuditLog(tmp_path).tail(5)
    assert (record["actor"], record["claimed_actor"]) == ("mqtt:guest", None)
