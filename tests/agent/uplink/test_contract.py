"""The published contract checked by a validator we did not write (``jsonschema``, Draft
2020-12 with format checking): the examples in docs/uplink.md, and every answer the command
processor gives, against the schemas in schemas/uplink/ — not against our own models.

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
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.broker import Broker
from helpers.clock import ManualClock
from helpers.paths import REPO
from helpers.waiting import eventually
from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.outbox import Outbox
from smartpole.agent.uplink.command_answers import STATUS_OF, answer
from smartpole.agent.uplink.commands import CommandProcessor
from smartpole.agent.uplink.mqtt import MqttUplink
from smartpole.agent.uplink.topics import Topics

SCHEMAS = REPO / "schemas" / "uplink"
DOCS = REPO / "docs" / "uplink.md"
BY_STREAM = {
    "alarms": "alarm",
    "telemetry": "telemetry",
    "events": "event",
    "traffic": "traffic",
    "cmd_result": "command-result",
}


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def schema_of(example: dict[str, Any]) -> str:
    if "stream" in example:
        return BY_STREAM[example["stream"]]
    if "devices" in example and "hash" in example:
        return "meta"
    if "state" in example:
        return "state"
    if "command" in example and "issued_at" in example:
        return "command-request"
    raise AssertionError(f"no schema for the docs example {example}")


def docs_examples() -> list[dict[str, Any]]:
    """Every JSON value in every ```json block of docs/uplink.md (a block may hold several)."""
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    for block in re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.DOTALL):
        at = 0
        while (at := _skip_space(block, at)) < len(block):
            value, at = decoder.raw_decode(block, at)
            found.append(value)
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def test_every_docs_example_validates_against_its_schema() -> None:
    examples = docs_examples()
    assert len(examples) >= 7
    kinds = set()
    for example in examples:
        kinds.add(schema_of(example))
        errors = [e.message for e in validator(schema_of(example)).iter_errors(example)]
        assert not errors, (example, errors)
    assert {"command-request", "command-result", "state", "telemetry", "alarm", "meta"} <= kinds


def test_the_docs_meta_example_hashes_as_the_docs_say_and_names_one_hash() -> None:
    """The hash recomputed with hashlib from the docs' words (SHA-256 over ``devices`` as
    JSON with sorted keys, separators ',' and ':', UTF-8; first 16 hex digits), and the
    birth and telemetry examples name that same hash."""
    examples = docs_examples()
    (meta,) = [e for e in examples if schema_of(e) == "meta"]
    text = json.dumps(meta["devices"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert meta["hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    births = [e for e in examples if e.get("state") == "online"]
    telemetry = [e for e in examples if e.get("stream") == "telemetry"]
    assert births
    assert telemetry
    assert {e["meta"] for e in births} | {e["data"]["meta"] for e in telemetry} == {meta["hash"]}
    (will,) = [e for e in examples if e.get("state") == "offline"]
    assert {e["session"] for e in births} == {will["session"], meta["session"]}


def test_the_docs_command_example_is_signed_as_the_docs_say() -> None:
    (request,) = [e for e in docs_examples() if schema_of(e) == "command-request"]
    body = {key: value for key, value in request.items() if key != "signature"}
    message = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(b"example-key", message.encode(), hashlib.sha256).hexdigest()
    assert request["signature"] == expected


def test_the_result_schema_lists_exactly_the_reasons_and_statuses_of_the_code() -> None:
    data = json.loads((SCHEMAS / "command-result.schema.json").read_text())["properties"]["data"]
    assert data["properties"]["reason"]["enum"] == list(STATUS_OF)
    assert set(data["properties"]["status"]["enum"]) == set(STATUS_OF.values())


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"pole": "p1", "epoch": "0123456789abcdef", "stream": "cmd_result", "seq": 1,
            "ts": 1.0, "data": data}  # fmt: skip


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
    errors = [e.message for e in validator("command-result").iter_errors(_envelope(built))]
    assert not errors, (built, errors)


KEY = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0


def _processor(tmp_path: Path) -> CommandProcessor:
    key_file = tmp_path / "command.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    settings = CommandsConfig.model_validate(
        {"allow": {"*": ["*"]}, "hmac_key_file": str(key_file)}
    )
    return CommandProcessor(settings, object(), AuditLog(tmp_path), tmp_path, clock=ManualClock(T0))  # type: ignore[arg-type]


def _signed(**fields: Any) -> bytes:
    data: dict[str, Any] = {"id": "c-1", "issued_at": T0, "actor": "ops", "command": "report_now",
                            "args": {}, **fields}  # fmt: skip
    body = {k: v for k, v in data.items() if k != "signature"}
    message = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data["signature"] = hmac.new(KEY, message.encode(), hashlib.sha256).hexdigest()
    return json.dumps(data).encode()


BAD_INPUT = {
    "too_large": b"{" + b" " * 5000 + b"}",
    "bad_json": b"not json",
    "bad_id": _signed(id="x" * 65),
    "ts_instead_of_issued_at": json.dumps(
        {"id": "c-2", "ts": T0, "actor": "ops", "command": "report_now"}
    ).encode(),
    "unknown_command": _signed(id="c-3", command="set_dim"),
    "unsigned": json.dumps(
        {"id": "c-4", "issued_at": T0, "actor": "ops", "command": "report_now"}
    ).encode(),
    "stale": _signed(id="c-5", issued_at=T0 - 86400),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(BAD_INPUT))
async def test_every_malformed_command_gets_one_answer_in_the_schema(
    tmp_path: Path, case: str
) -> None:
    processor = _processor(tmp_path)
    result = await processor.handle(BAD_INPUT[case], source="mqtt")
    errors = [e.message for e in validator("command-result").iter_errors(_envelope(result))]
    assert not errors, (result, errors)
    assert result["status"] == "rejected"
    assert sum(processor.counters.values()) == 1


@pytest.mark.asyncio
async def test_an_oversized_command_is_answered_on_mqtt_in_the_one_shape(tmp_path: Path) -> None:
    """Through a real Mosquitto: the uplink used to answer a payload over its own 16 KiB
    limit with a second shape (``{ok, error}``, no id) and to count only those as rejected."""
    with Broker(tmp_path / "broker") as broker:
        settings = UplinkConfig.model_validate(
            {"host": "127.0.0.1", "port": broker.port, "idle_poll_s": 0.05,
             "backoff": {"initial_s": 0.1, "max_s": 0.3, "jitter": 0.0}}
        )  # fmt: skip
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
                async with asyncio.timeout(15):
                    # The pole's subscription may lag its CONNACK: send until answered.
                    while not answers:
                        await platform.publish(topics.command, b"{" + b" " * 20000 + b"}", qos=1)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1.0):
                                async for message in platform.messages:
                                    answers.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
                                    break
    errors = [e.message for e in validator("command-result").iter_errors(answers[0])]
    assert not errors, (answers[0], errors)
    assert (answers[0]["data"]["id"], answers[0]["data"]["reason"]) == (None, "too_large")
    assert uplink.commands_rejected >= 1
