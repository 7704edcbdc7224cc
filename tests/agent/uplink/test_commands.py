"""Platform commands: every bad payload answered and counted, each command run once, audited."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from helpers.clock import ManualClock
from helpers.processes import pole_config
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.pole import Pole
from smartpole.agent.uplink.command_auth import sign
from smartpole.agent.uplink.command_schema import canonical_json
from smartpole.agent.uplink.commands import CommandProcessor
from smartpole.drivers.errors import DeviceTimeoutError, WriteRejectedError

NOW = 1_700_000_000.0
KEY = b"0123456789abcdef0123456789abcdef"
ALLOW_ALL = {"*": ["*"]}


class Recorder:
    """The daemon side of the Protocol, in memory: records calls, can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()  # the first call has been made

    async def _do(self, name: str, *args: object) -> object:
        self.calls.append((name, args))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {"done": name}

    async def set_level(
        self,
        lamp: str,
        level: int,
        actor: str,
        *,
        point: str = "dim_level",
        duration_s: float | None = None,
    ) -> object:
        return await self._do("set_level", lamp, level, point, duration_s, actor)

    async def relay(self, device: str, point: str, on: bool, actor: str) -> object:
        return await self._do("relay", device, point, on, actor)

    async def override(self, lamp: str, level: int, duration_s: float, actor: str) -> object:
        return await self._do("override", lamp, level, duration_s, actor)

    async def clear_override(self, lamp: str, actor: str) -> object:
        return await self._do("clear_override", lamp, actor)

    async def power_cycle(self, device: str, actor: str) -> object:
        return await self._do("power_cycle", device, actor)

    async def ptz(self, device: str, preset: int, actor: str) -> object:
        return await self._do("ptz", device, preset, actor)

    async def reset_alarm(self, alarm_id: str, actor: str) -> object:
        return await self._do("reset_alarm", alarm_id, actor)

    async def report_now(self, actor: str) -> object:
        return await self._do("report_now", actor)


class Clock(ManualClock):
    def __init__(self) -> None:
        super().__init__(NOW)


def payload(
    command: str = "set_level",
    args: dict[str, Any] | None = None,
    *,
    key: bytes | None = None,
    **fields: Any,
) -> bytes:
    data: dict[str, Any] = {
        "id": "c-1",
        "issued_at": NOW,
        "actor": "ops-alice",
        "command": command,
        "args": {"lamp": "lamp1", "level": 40} if args is None else args,
        **fields,
    }
    if key is not None:
        data["signature"] = sign(key, canonical_json(data))
    return json.dumps(data).encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make(tmp_path: Path, recorder: Recorder, clock: Clock) -> Any:
    def build(**config: Any) -> CommandProcessor:
        config.setdefault("allow", ALLOW_ALL)
        return CommandProcessor(
            CommandsConfig.model_validate(config),
            recorder,
            AuditLog(tmp_path),
            tmp_path,
            clock=clock,
        )

    return build


@pytest.mark.asyncio
async def test_a_command_runs_and_is_answered(make: Any, recorder: Recorder) -> None:
    processor = make()
    result = await processor.handle(payload(), source="mqtt")
    assert result == {
        "id": "c-1",
        "command": "set_level",
        "status": "ok",
        "reason": "ok",
        "error": None,
        "result": {"done": "set_level"},
    }
    assert recorder.calls == [("set_level", ("lamp1", 40, "dim_level", None, "mqtt:ops-alice"))]
    assert processor.counters["ok"] == 1


@pytest.mark.parametrize(
    ("command", "args", "call"),
    [
        ("override", {"lamp": "l", "level": 0, "duration_s": 60}, ("override", ("l", 0, 60.0))),
        ("clear_override", {"lamp": "l"}, ("clear_override", ("l",))),
        ("relay", {"device": "relays", "point": "relay2", "on": False},
         ("relay", ("relays", "relay2", False))),
        ("set_level", {"lamp": "l", "level": 7, "duration_s": 30},
         ("set_level", ("l", 7, "dim_level", 30.0))),
        ("power_cycle", {"device": "camera"}, ("power_cycle", ("camera",))),
        ("ptz_preset", {"device": "camera", "preset": 3}, ("ptz", ("camera", 3))),
        ("ack_alarm", {"alarm_id": "door_open-1"}, ("reset_alarm", ("door_open-1",))),
        ("report_now", {}, ("report_now", ())),
    ],
)  # fmt: skip
@pytest.mark.asyncio
async def test_each_command_reaches_the_executor(
    make: Any, recorder: Recorder, command: str, args: dict[str, Any], call: tuple[str, Any]
) -> None:
    result = await make().handle(payload(command, args), source="opcua")
    assert result["status"] == "ok", result
    name, values = recorder.calls[0]
    assert (name, values) == (call[0], (*call[1], "opcua:ops-alice"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "bad_json"),
        (b'{"id": "x", "id": "y"}', "bad_json"),
        (b'{"issued_at": NaN}', "bad_json"),
        (b"[" * 3000, "bad_json"),
        (b"x" * 5000, "too_large"),
        (payload("self_destruct"), "unknown_command"),
        (payload(args={"lamp": "lamp1"}), "bad_args"),
        (payload(args={"lamp": "lamp1", "level": 40, "colour": "red"}), "bad_args"),
        (payload(args={"lamp": "lamp1", "level": "40"}), "bad_args"),
        (payload(args={"lamp": "lamp1", "level": 101}), "bad_args"),
        (payload("ptz_preset", {"device": "cam", "preset": True}), "bad_args"),
        (payload(issued_at="now"), "bad_schema"),
        (payload(id="x" * 65), "bad_schema"),
        (payload(actor="eve\nadmin"), "bad_schema"),
        (payload(extra=1), "bad_schema"),
    ],
)
@pytest.mark.asyncio
async def test_bad_payloads_are_rejected_counted_and_not_run(
    make: Any, recorder: Recorder, raw: bytes, reason: str
) -> None:
    processor = make()
    result = await processor.handle(raw, source="mqtt")
    assert result["status"] == "rejected"
    assert result["reason"] == reason
    assert isinstance(result["error"], str)
    assert result["error"]
    assert processor.counters == {reason: 1}
    assert recorder.calls == []


@pytest.mark.asyncio
async def test_a_rejection_echoes_a_readable_id(make: Any) -> None:
    result = await make().handle(payload("self_destruct", id="abc-9"), source="mqtt")
    assert result["id"] == "abc-9"
    assert "set_level" in str(result["error"])  # the known commands are listed


@pytest.mark.asyncio
async def test_signatures_are_required_and_checked(
    make: Any, recorder: Recorder, tmp_path: Path
) -> None:
    key_file = tmp_path / "command.key"
    key_file.write_bytes(KEY + b"\n")
    key_file.chmod(0o600)
    processor = make(hmac_key_file=str(key_file))
    assert (await processor.handle(payload(), source="mqtt"))["reason"] == "missing_signature"
    forged = payload(key=b"another key of sixteen bytes or more")
    assert (await processor.handle(forged, source="mqtt"))["reason"] == "bad_signature"
    tampered = json.loads(payload(key=KEY))
    tampered["args"]["level"] = 100
    assert (await processor.handle(json.dumps(tampered).encode(), source="mqtt"))[
        "reason"
    ] == "bad_signature"
    assert recorder.calls == []
    # key order and whitespace of the payload do not matter, only its content
    signed = json.loads(payload(key=KEY))
    reordered = json.dumps(dict(reversed(list(signed.items()))), indent=2).encode()
    assert (await processor.handle(reordered, source="mqtt"))["status"] == "ok"
    assert len(recorder.calls) == 1


@pytest.mark.asyncio
async def test_a_missing_key_fails_closed_and_a_rotated_key_is_picked_up(
    make: Any, tmp_path: Path
) -> None:
    key_file = tmp_path / "command.key"
    processor = make(hmac_key_file=str(key_file))
    result = await processor.handle(payload(key=KEY), source="mqtt")
    assert result["reason"] == "key_unavailable"
    key_file.write_bytes(KEY)
    assert (await processor.handle(payload(key=KEY), source="mqtt"))["status"] == "ok"
    new_key = b"fedcba9876543210fedcba9876543210-rotated"
    key_file.write_bytes(new_key)
    old = await processor.handle(payload(key=KEY, id="c-2"), source="mqtt")
    assert old["reason"] == "bad_signature"
    new = await processor.handle(payload(key=new_key, id="c-3"), source="mqtt")
    assert new["status"] == "ok"


@pytest.mark.parametrize(("offset", "reason"), [(-301, "stale"), (301, "future")])
@pytest.mark.asyncio
async def test_timestamps_outside_the_window_are_refused(
    make: Any, recorder: Recorder, offset: float, reason: str
) -> None:
    processor = make()
    result = await processor.handle(payload(issued_at=NOW + offset), source="mqtt")
    assert (result["status"], result["reason"]) == ("rejected", reason)
    assert recorder.calls == []
    inside = await processor.handle(payload(issued_at=NOW + offset * 0.9), source="mqtt")
    assert inside["status"] == "ok"


@pytest.mark.asyncio
async def test_a_replayed_id_runs_once_and_gets_the_first_answer(
    make: Any, recorder: Recorder, clock: Clock
) -> None:
    processor = make()
    first = await processor.handle(payload(), source="mqtt")
    clock.now += 3600  # a redelivery after an hour offline: duplicate, not "stale"
    again = await processor.handle(payload(), source="mqtt")
    assert len(recorder.calls) == 1
    assert again["status"] == "duplicate"
    assert again["result"] == first["result"]
    assert again["first"] == {"status": "ok", "reason": "ok", "error": None}
    assert processor.counters == {"ok": 1, "duplicate": 1}


@pytest.mark.asyncio
async def test_concurrent_redeliveries_wait_for_the_first(make: Any, recorder: Recorder) -> None:
    processor = make()
    recorder.gate = asyncio.Event()
    first = asyncio.create_task(processor.handle(payload(), source="mqtt"))
    second = asyncio.create_task(processor.handle(payload(), source="mqtt"))
    await recorder.entered.wait()
    recorder.gate.set()
    results = await asyncio.gather(first, second)
    assert [r["status"] for r in results] == ["ok", "duplicate"]
    assert len(recorder.calls) == 1


@pytest.mark.asyncio
async def test_ids_survive_a_restart(make: Any, recorder: Recorder, tmp_path: Path) -> None:
    await make().handle(payload(), source="mqtt")
    recorder.fail = WriteRejectedError("the point is read-only in its profile")
    await make().handle(payload(id="c-2"), source="mqtt")
    restarted = make()
    assert (await restarted.handle(payload(), source="mqtt"))["status"] == "duplicate"
    again = await restarted.handle(payload(id="c-2"), source="mqtt")
    assert again["status"] == "duplicate"
    assert again["first"] == {"status": "rejected", "reason": "refused",
                              "error": "the point is read-only in its profile"}  # fmt: skip
    assert len(recorder.calls) == 2


@pytest.mark.asyncio
async def test_a_command_cut_short_by_a_restart_is_not_run_again(
    make: Any, recorder: Recorder
) -> None:
    processor = make()
    recorder.gate = asyncio.Event()
    task = asyncio.create_task(processor.handle(payload("power_cycle", {"device": "cam"}),
                                                source="mqtt"))  # fmt: skip
    await recorder.entered.wait()
    task.cancel()  # the agent is stopped while the relay is off
    with pytest.raises(asyncio.CancelledError):
        await task
    recorder.gate = None
    again = await make().handle(payload("power_cycle", {"device": "cam"}), source="mqtt")
    assert again["status"] == "duplicate"
    assert "outcome is unknown" in str(again["first"])
    assert len(recorder.calls) == 1


@pytest.mark.asyncio
async def test_ids_are_forgotten_after_dedupe_keep_s(
    make: Any, recorder: Recorder, clock: Clock
) -> None:
    processor = make(dedupe_keep_s=600, max_skew_s=300)
    await processor.handle(payload(), source="mqtt")
    clock.now += 601
    # Only an accepted command makes room; then the old id is gone...
    fresh = await processor.handle(payload(id="c-2", issued_at=clock.now), source="mqtt")
    assert fresh["status"] == "ok"
    assert processor.stats()["remembered_ids"] == 1
    late = await processor.handle(payload(), source="mqtt")
    assert late["reason"] == "stale"  # ... and the window refuses it anyway
    assert len(recorder.calls) == 2


def test_dedupe_must_outlast_the_timestamp_window() -> None:
    with pytest.raises(ValidationError, match="2 x max_skew_s"):
        CommandsConfig.model_validate({"max_skew_s": 600, "dedupe_keep_s": 900})
    with pytest.raises(ValidationError):
        CommandsConfig.model_validate({"allow": {"*": ["self_destruct"]}})


@pytest.mark.asyncio
async def test_a_corrupt_id_file_is_moved_aside(make: Any, tmp_path: Path) -> None:
    (tmp_path / "commands.json").write_text('{"version": 1, "commands": {"a": 5}}')
    processor = make()
    assert processor.stats()["store_quarantined"] is True
    assert (tmp_path / "commands.json.corrupt").exists()
    assert (await processor.handle(payload(), source="mqtt"))["status"] == "ok"


@pytest.mark.asyncio
async def test_the_allow_list_matches_actor_globs(make: Any, recorder: Recorder) -> None:
    processor = make(
        allow={"ops-*": ["set_level", "override"], "admin": ["*"], "svc-report": ["report_now"]}
    )

    async def status(actor: str, command: str, args: dict[str, Any], n: int) -> object:
        raw = payload(command, args, actor=actor, id=f"c-{n}")
        return (await processor.handle(raw, source="mqtt"))["reason"]

    lamp = {"lamp": "lamp1", "level": 10}
    cycle = {"device": "camera"}
    assert await status("ops-bob", "set_level", lamp, 1) == "ok"
    assert await status("ops-bob", "power_cycle", cycle, 2) == "not_allowed"
    assert await status("opsbob", "set_level", lamp, 3) == "not_allowed"
    assert await status("admin", "power_cycle", cycle, 4) == "ok"
    assert await status("admin2", "power_cycle", cycle, 5) == "not_allowed"
    assert await status("svc-report", "report_now", {}, 6) == "ok"
    assert len(recorder.calls) == 3


@pytest.mark.asyncio
async def test_nothing_is_allowed_by_default(tmp_path: Path, recorder: Recorder) -> None:
    processor = CommandProcessor(CommandsConfig(), recorder, AuditLog(tmp_path), tmp_path,
                                 clock=Clock())  # fmt: skip
    assert (await processor.handle(payload(), source="mqtt"))["reason"] == "not_allowed"


@pytest.mark.asyncio
async def test_outcomes_are_audited(make: Any, recorder: Recorder, tmp_path: Path) -> None:
    processor = make(allow={"ops-*": ["set_level"]})
    await processor.handle(payload(), source="mqtt")
    await processor.handle(payload("power_cycle", {"device": "cam"}, id="c-2"), source="mqtt")
    recorder.fail = DeviceTimeoutError("lamp1 did not answer")
    failed = await processor.handle(payload(id="c-3"), source="opcua")
    await processor.handle(payload(), source="mqtt")  # duplicate
    await processor.handle(b"garbage", source="mqtt")  # no sender at all
    assert failed["status"] == "failed"
    records = AuditLog(tmp_path).tail(10)
    rows = [(r["actor"], r["claimed_actor"], r["action"], r["target"], r["ok"]) for r in records]
    assert rows == [
        ("mqtt:ops-alice", None, "set_level", "lamp1.dim_level", True),
        # Refused without a key to vouch for it: a claim, never blamed on ops-alice.
        ("unauthenticated", "mqtt:ops-alice", "power_cycle", "cam", False),
        ("opcua:ops-alice", None, "set_level", "lamp1.dim_level", False),
        ("unauthenticated", "mqtt:ops-alice", "set_level", "lamp1.dim_level", False),
        ("unauthenticated", None, "unknown", "", False),
    ]
    assert records[0]["requested"] == {"lamp": "lamp1", "level": 40, "point": "dim_level"}
    assert str(records[1]["error"]).startswith("not_allowed:")
    assert records[2]["error"] == "device_error: lamp1 did not answer"
    assert str(records[3]["error"]).startswith("duplicate:")
    assert str(records[4]["error"]).startswith("bad_json:")
    stats = processor.stats()
    assert stats["by_status"] == {"ok": 1, "rejected": 2, "failed": 1, "duplicate": 1}


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (WriteRejectedError("12 is outside the allowed range 0 to 10"), "rejected", "refused"),
        (DeviceTimeoutError("no answer"), "failed", "device_error"),
        (RuntimeError("a bug"), "failed", "internal_error"),
    ],
)
@pytest.mark.asyncio
async def test_executor_errors_become_answers(
    make: Any, recorder: Recorder, error: Exception, status: str, reason: str
) -> None:
    recorder.fail = error
    result = await make().handle(payload(), source="mqtt")
    assert (result["status"], result["reason"]) == (status, reason)
    assert str(error) in str(result["error"])


@pytest.mark.asyncio
async def test_submit_for_authenticated_sessions(make: Any, recorder: Recorder) -> None:
    processor = make(allow={"operator": ["ptz_preset"]}, hmac_key_file="/nonexistent")
    ok = await processor.submit("ptz_preset", {"device": "cam", "preset": 2},
                                actor="operator", source="opcua")  # fmt: skip
    assert ok["status"] == "ok"
    assert isinstance(ok["id"], str)
    refused = await processor.submit("power_cycle", {"device": "cam"}, actor="operator",
                                     source="opcua")  # fmt: skip
    assert refused["reason"] == "not_allowed"
    bad = await processor.submit("ptz_preset", {"preset": 2}, actor="operator", source="opcua")
    assert bad["reason"] == "bad_args"
    assert recorder.calls == [("ptz", ("cam", 2, "opcua:operator"))]


@pytest.mark.asyncio
async def test_through_the_real_pole_operations(tmp_path: Path) -> None:
    """The pole's own operations refuse what this pole cannot do: answered "rejected"."""
    config = load_config(pole_config(tmp_path))
    async with Pole(
        config, state_dir=tmp_path, runtime_dir=tmp_path, clock_trusted=lambda: True
    ) as pole:
        processor = CommandProcessor(
            CommandsConfig(allow=ALLOW_ALL),  # type: ignore[arg-type]
            pole.operations,
            pole.audit,
            tmp_path,
            clock=Clock(),
        )
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("set_level", {"lamp": "lamp9", "level": 5}, "no device 'lamp9'"),
            ("ptz_preset", {"device": "weather", "preset": 1}, "not a PTZ camera"),
            ("override", {"lamp": "weather", "level": 5, "duration_s": 5}, "no lighting"),
            ("power_cycle", {"device": "weather"}, "no power section"),
            ("ack_alarm", {"alarm_id": "door-1"}, "door-1"),
            ("report_now", {}, "telemetry is not enabled"),
        ]
        for n, (command, args, message) in enumerate(cases):
            result = await processor.handle(payload(command, args, id=f"d-{n}"), source="mqtt")
            assert (result["status"], result["reason"]) == ("rejected", "refused"), result
            assert message in str(result["error"])


_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=70), st.integers()),
        "issued_at": st.one_of(st.floats(), st.integers(), st.just(NOW)),
        "actor": st.one_of(st.text(max_size=10), st.just("ops-x")),
        "command": st.one_of(st.sampled_from(["set_level", "relay", "ptz_preset", "x"])),
        "args": st.dictionaries(
            st.sampled_from(["lamp", "level", "device", "point", "on", "preset", "zz"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
        ),
        "signature": st.text(max_size=70),
    },
)
_payloads = st.one_of(
    st.binary(max_size=5000),
    _fields.map(lambda data: json.dumps(data).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_payloads)
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as state:
        processor = CommandProcessor(
            CommandsConfig(allow=ALLOW_ALL),  # type: ignore[arg-type]
            Recorder(),
            AuditLog(Path(state)),
            Path(state),
            clock=Clock(),
        )
        result = asyncio.run(processor.handle(raw, source="mqtt"))
    assert result["status"] in {"ok", "rejected", "failed", "duplicate"}
    assert set(result) >= {"id", "status", "error", "result"}
    assert result["reason"] != "internal_error"
    json.dumps(result, allow_nan=False)
