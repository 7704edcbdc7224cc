"""The published contract checked by a validator we did not write (``jsonschema``, Draft
2020-12 with format checking): the examples in docs/uplink.md against the schema of the
topic the docs' table names, and every answer the command processor gives, against the
schemas in schemas/uplink/ — not against our own models.

The signature check of the docs example is written from the algorithm as docs/uplink.md
states it, with the standard library, not with our signing code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.broker import Broker
from helpers.clock import ManualClock
from helpers.contract import (
    DOCS,
    SCHEMAS,
    docs_examples,
    errors,
    example_topics,
    topic_of_stream,
    topic_table,
)
from helpers.waiting import eventually
from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.uplink.command_answers import STATUS_OF, answer
from smartpole.agent.uplink.commands import CommandProcessor
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.topics import Topics

RESULT_SCHEMA = "command-result.schema.json"


def test_every_docs_example_validates_against_the_schema_of_its_topic() -> None:
    examples = docs_examples()
    assert len(examples) >= 14
    covered = set()
    for example in examples:
        topics = example_topics(example)
        if isinstance(example, dict) and "stream" in example:
            schema = topic_of_stream(example["stream"]).schema
            assert topics, (example, errors(schema, example))
        assert topics, f"this docs example matches the schema of no topic: {example}"
        covered.update(t.name for t in topics)
    missing = set(topic_table()) - covered
    assert not missing, f"topics of the docs' table without an example: {missing}"


def test_the_docs_meta_example_hashes_as_the_docs_say_and_names_one_hash() -> None:
    """The hash recomputed with hashlib from the docs' words (SHA-256 over ``devices`` as
    JSON with sorted keys, separators ',' and ':', UTF-8; first 16 hex digits), and the
    birth and telemetry examples name that same hash."""
    examples = docs_examples()
    (meta,) = [e for e in examples if "devices" in e and "hash" in e]
    text = json.dumps(meta["devices"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert meta["hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    births = [e for e in examples if e.get("state") == "online"]
    telemetry = [e for e in examples if e.get("stream") == "telemetry"]
    assert births
    assert telemetry
    assert {e["meta"] for e in births} | {e["data"]["meta"] for e in telemetry} == {meta["hash"]}
    (will,) = [e for e in examples if e.get("reason") == "connection lost"]
    assert {e["session"] for e in births} == {will["session"], meta["session"]}


def test_an_example_of_no_topic_fails_the_docs_check() -> None:
    """The check above can fail: a shape no schema has, or a stream example with a field
    its schema does not know, matches no topic."""
    assert example_topics({"state": "sleeping", "pole": "p"}) == []
    (alarm,) = [e for e in docs_examples() if e.get("stream") == "alarms"]
    assert example_topics({**alarm, "data": {**alarm["data"], "colour": "red"}}) == []


def test_every_schema_file_is_named_by_the_topic_table() -> None:
    named = {topic.schema for topic in topic_table().values()}
    assert named == {path.name for path in SCHEMAS.glob("*.schema.json")}


def _docs_key() -> bytes:
    """The key of the docs' example, as the docs state it: a key file holding this text and
    a newline, whose bytes without surrounding whitespace are the key."""
    match = re.search(r"signed\s+here with a key file holding `([^`]+)`", DOCS.read_text())
    assert match, "docs/uplink.md no longer says which key signs its example"
    return (match.group(1) + "\n").encode().strip()


def test_the_docs_command_example_is_signed_as_the_docs_say() -> None:
    (request,) = [e for e in docs_examples() if "issued_at" in e and "signature" in e]
    body = {key: value for key, value in request.items() if key != "signature"}
    message = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(_docs_key(), message.encode(), hashlib.sha256).hexdigest()
    assert request["signature"] == expected


def test_the_result_schema_lists_exactly_the_reasons_and_statuses_of_the_code() -> None:
    schema = json.loads((SCHEMAS / RESULT_SCHEMA).read_text())
    data = schema["properties"]["data"]
    assert data["properties"]["reason"]["enum"] == list(STATUS_OF)
    assert set(data["properties"]["status"]["enum"]) == set(STATUS_OF.values())


def test_the_docs_list_every_reason_with_its_status() -> None:
    rows = re.findall(r"^\| (`[a-z_]+`(?: / `[a-z_]+`)*) \| ([a-z]+) \|", DOCS.read_text(), re.M)
    documented = {
        reason: status for names, status in rows for reason in re.findall(r"`([a-z_]+)`", names)
    }
    assert documented == {r: s for r, s in STATUS_OF.items() if r != "ok"}


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "pole": "p1",
        "epoch": "0123456789abcdef",
        "stream": "cmd_result",
        "seq": 1,
        "ts": 1.0,
        "data": data,
    }


PRINTABLE = st.characters(min_codepoint=33, max_codepoint=126)
RESULTS = (
    st.none() | st.booleans() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
)


@given(
    reason=st.sampled_from(list(STATUS_OF)),
    command_id=st.none() | st.text(PRINTABLE, min_size=1, max_size=64),
    error=st.none() | st.text(max_size=40),
    result=RESULTS,
)
def test_every_answer_the_code_can_build_validates(
    reason: str, command_id: str | None, error: str | None, result: object
) -> None:
    built = answer(command_id, reason, error, result, command="relay")
    if reason == "duplicate":  # as the processor answers a known id
        built["first"] = {"status": "ok", "reason": "ok", "error": None}
    assert not errors(RESULT_SCHEMA, _envelope(built)), built


KEY = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0


class Executor:
    """The operations side, recording every call: a rejected command makes none."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            return True

        return call


def _processor(tmp_path: Path, executor: object | None = None, **config: Any) -> CommandProcessor:
    key_file = tmp_path / "command.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    settings = CommandsConfig.model_validate(
        {"allow": {"ops*": ["*"]}, "hmac_key_file": str(key_file), **config}
    )
    return CommandProcessor(
        settings,
        executor or Executor(),  # type: ignore[arg-type]
        AuditLog(tmp_path),
        tmp_path,
        clock=ManualClock(T0),
    )


def _signed(**fields: Any) -> bytes:
    data: dict[str, Any] = {
        "id": "c-1",
        "issued_at": T0,
        "actor": "ops",
        "command": "report_now",
        "args": {},
        **fields,
    }
    body = {k: v for k, v in data.items() if k != "signature"}
    message = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data["signature"] = hmac.new(KEY, message.encode(), hashlib.sha256).hexdigest()
    return json.dumps(data).encode()


def _unsigned(**fields: Any) -> bytes:
    data = {"id": "c-u", "issued_at": T0, "actor": "ops", "command": "report_now", **fields}
    return json.dumps(data).encode()


# Every kind of bad input: the payload and the one reason it must be answered with.
BAD_INPUT: dict[str, tuple[bytes, str]] = {
    "too_large": (b"{" + b" " * 5000 + b"}", "too_large"),
    "not_json": (b"not json", "bad_json"),
    "not_utf8": (b'{"id": "\xff"}', "bad_json"),
    "not_an_object": (b"[1, 2]", "bad_json"),
    "duplicate_key": (b'{"id": "c-d", "id": "c-e"}', "bad_json"),
    "nan": (_unsigned(id="c-n").replace(b'"ops"', b"NaN"), "bad_json"),
    "wrong_types": (_signed(id="c-w", issued_at="now"), "bad_schema"),
    "ts_instead_of_issued_at": (
        json.dumps({"id": "c-2", "ts": T0, "actor": "ops", "command": "report_now"}).encode(),
        "bad_schema",
    ),
    "too_long_id": (_signed(id="x" * 65), "bad_schema"),
    "id_with_a_space": (_signed(id="c 1"), "bad_schema"),
    "unknown_command": (_signed(id="c-3", command="set_dim"), "unknown_command"),
    "bad_args": (
        _signed(id="c-a", command="set_level", args={"lamp": "l1", "level": "50"}),
        "bad_args",
    ),
    "missing_signature": (_unsigned(id="c-4"), "missing_signature"),
    "bad_signature": (
        _unsigned(id="c-b", signature="00" * 32),
        "bad_signature",
    ),
    "stale": (_signed(id="c-5", issued_at=T0 - 86400), "stale"),
    "future": (_signed(id="c-6", issued_at=T0 + 3600), "future"),
    "not_allowed": (_signed(id="c-7", actor="someone"), "not_allowed"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(BAD_INPUT))
async def test_every_malformed_command_gets_one_answer_in_the_schema_counted_changing_nothing(
    tmp_path: Path, case: str
) -> None:
    payload, reason = BAD_INPUT[case]
    executor = Executor()
    processor = _processor(tmp_path, executor)
    result = await processor.handle(payload, source="mqtt")
    assert not errors(RESULT_SCHEMA, _envelope(result)), result
    assert (result["status"], result["reason"]) == ("rejected", reason), result
    if reason == "bad_args":  # the command was known, so the answer names it
        assert result["command"] == "set_level", result
    assert processor.stats()["by_reason"] == {reason: 1}
    assert executor.calls == []
    assert processor.stats()["remembered_ids"] == 0
    assert not (tmp_path / "commands.json").exists(), "a rejected command was remembered"


@pytest.mark.asyncio
async def test_a_duplicate_is_answered_once_more_and_runs_nothing(tmp_path: Path) -> None:
    executor = Executor()
    processor = _processor(tmp_path, executor)
    first = await processor.handle(_signed(id="c-dup"), source="mqtt")
    again = await processor.handle(_signed(id="c-dup"), source="mqtt")
    for result in (first, again):
        assert not errors(RESULT_SCHEMA, _envelope(result)), result
    assert (first["status"], again["status"]) == ("ok", "duplicate")
    assert executor.calls == ["report_now"]
    assert processor.stats()["by_reason"] == {"ok": 1, "duplicate": 1}


@pytest.mark.asyncio
async def test_a_pole_whose_key_is_unreadable_answers_in_the_schema(tmp_path: Path) -> None:
    executor = Executor()
    processor = _processor(tmp_path, executor)
    (tmp_path / "command.key").write_bytes(b"short")
    result = await processor.handle(_signed(id="c-k"), source="mqtt")
    assert not errors(RESULT_SCHEMA, _envelope(result)), result
    assert result["reason"] == "key_unavailable"
    assert executor.calls == []


@pytest.mark.asyncio
async def test_a_full_replay_cache_answers_in_the_schema(tmp_path: Path) -> None:
    executor = Executor()
    processor = _processor(tmp_path, executor, max_remembered=100)
    for n in range(100):
        assert (await processor.handle(_signed(id=f"c-{n}"), source="mqtt"))["status"] == "ok"
    result = await processor.handle(_signed(id="c-full"), source="mqtt")
    assert not errors(RESULT_SCHEMA, _envelope(result)), result
    assert result["reason"] == "replay_cache_full"
    assert len(executor.calls) == 100


@pytest.mark.asyncio
async def test_diag_uplink_counts_every_answer_by_reason(tmp_path: Path) -> None:
    """Through a real Mosquitto: the uplink used to answer a payload over its own 16 KiB
    limit with a second shape (``{ok, error}``, no id), and ``diag uplink`` counted only
    those as rejected, never the commands the processor refused."""
    bad = ["too_large", "not_json", "too_long_id", "bad_signature", "stale", "not_allowed"]
    with Broker(tmp_path / "broker") as broker:
        settings = UplinkConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": broker.port,
                "idle_poll_s": 0.05,
                "backoff": {"initial_s": 0.1, "max_s": 0.3, "jitter": 0.0},
            }
        )
        topics = Topics("contract-pole")
        with Outbox(tmp_path) as outbox:
            uplink = MqttUplink(
                settings,
                pole_id="contract-pole",
                outbox=outbox,
                base_dir=tmp_path,
                commands=_processor(tmp_path),
            )
            async with (
                uplink,
                aiomqtt.Client("127.0.0.1", broker.port, identifier="platform") as platform,
            ):
                await platform.subscribe(topics.command_result, qos=1)
                await eventually(lambda: uplink.state == "connected", 15.0, "the uplink")
                answers: list[dict[str, Any]] = []
                sent = 0
                async with asyncio.timeout(15):
                    # The pole's subscription may lag its CONNACK: send until answered.
                    while not answers:
                        await platform.publish(topics.command, BAD_INPUT["too_large"][0], qos=1)
                        sent += 1
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1.0):
                                async for message in platform.messages:
                                    answers.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
                                    break
                    for case in bad[1:]:
                        await platform.publish(topics.command, BAD_INPUT[case][0], qos=1)
                        sent += 1
                    async for message in platform.messages:
                        answers.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
                        if len(answers) == len(bad):
                            break
                status = uplink.status()["commands"]
    for got in answers:
        assert not errors(RESULT_SCHEMA, got), got
    assert (answers[0]["data"]["id"], answers[0]["data"]["reason"]) == (None, "too_large")
    assert sorted(a["data"]["reason"] for a in answers) == sorted(BAD_INPUT[c][1] for c in bad)
    assert isinstance(status, dict)
    # Copies of the first payload sent before the pole subscribed were never delivered.
    by_reason = dict(status["by_reason"])
    assert 1 <= by_reason.pop("too_large") <= sent - len(bad) + 1
    assert by_reason == {BAD_INPUT[case][1]: 1 for case in bad[1:]}
    assert status["rejected"] == sum(status["by_reason"].values())
