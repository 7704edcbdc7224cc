"""Rotating the command key: the old and the new key both valid while the previous-key file
exists, the old one refused once it is removed; the one-key file means what it always did."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from helpers.clock import ManualClock
from smartpole.agent import keys
from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.uplink.commands import CommandProcessor

T0 = 1_700_000_000.0


class Executor:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def report_now(self, actor: str) -> object:
        self.calls.append(actor)
        return True


def _signed(key_file: Path, command_id: str) -> bytes:
    """Signed as docs/uplink.md says: the key is the file's bytes without surrounding
    whitespace; the message the canonical JSON without the signature."""
    key = key_file.read_bytes().strip()
    data: dict[str, Any] = {
        "id": command_id,
        "issued_at": T0,
        "actor": "ops",
        "command": "report_now",
    }
    message = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data["signature"] = hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
    return json.dumps(data).encode()


def _processor(tmp_path: Path, executor: Executor, **paths: Path) -> CommandProcessor:
    config = CommandsConfig.model_validate(
        {"allow": {"ops": ["report_now"]}, **{k: str(v) for k, v in paths.items()}}
    )
    return CommandProcessor(
        config,
        executor,
        AuditLog(tmp_path),
        tmp_path,  # type: ignore[arg-type]
        clock=ManualClock(T0),
    )


@pytest.mark.asyncio
async def test_old_and_new_key_during_the_overlap_and_the_old_refused_after(
    tmp_path: Path,
) -> None:
    current, previous = tmp_path / "pole.key", tmp_path / "pole.key.previous"
    keys.write_key_file(current, keys.new_key_text(), force=False)
    old_key = tmp_path / "old.key"
    old_key.write_bytes(current.read_bytes())
    executor = Executor()
    processor = _processor(
        tmp_path, executor, hmac_key_file=current, previous_hmac_key_file=previous
    )
    # Before the rotation: the one key; the previous-key file's absence is no problem.
    assert (await processor.handle(_signed(current, "c-0"), source="mqtt"))["status"] == "ok"

    # keys rotate: the current key becomes the previous one, a new one is current.
    keys.write_key_file(previous, current.read_bytes(), force=False)
    keys.write_key_file(current, keys.new_key_text(), force=True)
    new_key = current
    assert old_key.read_bytes() != new_key.read_bytes()
    with_old = await processor.handle(_signed(old_key, "c-1"), source="mqtt")
    with_new = await processor.handle(_signed(new_key, "c-2"), source="mqtt")
    assert (with_old["status"], with_new["status"]) == ("ok", "ok")
    stats = processor.stats()["key"]
    assert isinstance(stats, dict)
    assert stats["accepted_with_previous_key"] == 1

    # The platform signs with the new key now: the overlap ends when the file goes.
    previous.unlink()
    after = await processor.handle(_signed(old_key, "c-3"), source="mqtt")
    assert (after["status"], after["reason"]) == ("rejected", "bad_signature")
    assert (await processor.handle(_signed(new_key, "c-4"), source="mqtt"))["status"] == "ok"
    assert len(executor.calls) == 4


@pytest.mark.asyncio
async def test_without_a_previous_key_only_the_current_one_signs(tmp_path: Path) -> None:
    current, other = tmp_path / "pole.key", tmp_path / "other.key"
    keys.write_key_file(current, keys.new_key_text(), force=False)
    keys.write_key_file(other, keys.new_key_text(), force=False)
    executor = Executor()
    processor = _processor(tmp_path, executor, hmac_key_file=current)
    refused = await processor.handle(_signed(other, "c-1"), source="mqtt")
    assert refused["reason"] == "bad_signature"
    assert executor.calls == []


@pytest.mark.asyncio
async def test_an_unusable_current_key_refuses_even_the_previous_one(tmp_path: Path) -> None:
    """The previous key is on its way out: it never stands in for a broken current key."""
    current, previous = tmp_path / "pole.key", tmp_path / "pole.key.previous"
    keys.write_key_file(previous, keys.new_key_text(), force=False)
    current.write_bytes(b"short\n")
    executor = Executor()
    processor = _processor(
        tmp_path, executor, hmac_key_file=current, previous_hmac_key_file=previous
    )
    refused = await processor.handle(_signed(previous, "c-1"), source="mqtt")
    assert refused["reason"] == "key_unavailable"
    assert executor.calls == []


def test_a_previous_key_needs_a_current_one() -> None:
    with pytest.raises(ValueError, match="needs hmac_key_file"):
        CommandsConfig.model_validate({"previous_hmac_key_file": "old.key"})
    with pytest.raises(ValueError, match="must not be"):
        CommandsConfig.model_validate({"hmac_key_file": "k", "previous_hmac_key_file": "k"})
