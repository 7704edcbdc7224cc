"""The camera worker's protocol on its own: what ``parse_line`` takes and what it refuses.

The supervisor reads untrusted bytes from a child process, so the parser must turn every
line into either one of the five messages or ``MalformedLineError``, and nothing else. That
the real worker writes only lines this parser takes is held by ``tests/models/test_worker.py``,
which reads every worker line with it.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartpole.agent.config.camera_worker import (
    WORKER_MODULE,
    ErrorMessage,
    EventMessage,
    HealthMessage,
    MalformedLineError,
    ReadyMessage,
    SummaryMessage,
    WorkerExit,
    WorkerMessage,
    command,
    encode,
    parse_line,
)
from smartpole.agent.config.cameras import CameraConfig

MESSAGES = st.one_of(
    st.from_type(ReadyMessage),
    st.from_type(HealthMessage),
    st.from_type(SummaryMessage),
    st.from_type(EventMessage),
    st.from_type(ErrorMessage),
)


def _floats(value: object) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for item in value.values() for f in _floats(item)]
    if isinstance(value, list):
        return [f for item in value for f in _floats(item)]
    return []


def _finite(message: WorkerMessage) -> bool:
    return all(math.isfinite(f) for f in _floats(message))


@given(MESSAGES)
def test_every_message_survives_its_line(message: WorkerMessage) -> None:
    if not _finite(message):
        with pytest.raises(ValueError, match="JSON"):
            encode(message)
        return
    line = encode(message)
    assert "\n" not in line
    assert parse_line(line) == message
    assert parse_line(line.encode()) == message


@given(st.binary(max_size=300))
def test_any_bytes_are_a_message_or_malformed(line: bytes) -> None:
    with contextlib.suppress(MalformedLineError):
        parse_line(line)


@given(MESSAGES.filter(_finite), st.data())
def test_a_line_missing_a_required_key_is_malformed(
    message: WorkerMessage, data: st.DataObject
) -> None:
    required = sorted(k for k in message if k not in ("type", "partial"))
    key = data.draw(st.sampled_from(required))
    broken = {k: v for k, v in message.items() if k != key}
    with pytest.raises(MalformedLineError, match=key):
        parse_line(json.dumps(broken))


@given(MESSAGES.filter(_finite), st.sampled_from(["extra", "Camera", "types"]))
def test_a_line_with_a_key_nobody_defined_is_malformed(message: WorkerMessage, key: str) -> None:
    with pytest.raises(MalformedLineError, match=key):
        parse_line(json.dumps({**message, key: 1}))


@given(MESSAGES.filter(_finite), st.data())
def test_a_number_in_quotes_is_malformed(message: WorkerMessage, data: st.DataObject) -> None:
    numbers = sorted(k for k, v in message.items() if isinstance(v, int | float))
    if not numbers:
        return
    key = data.draw(st.sampled_from(numbers))
    changed: dict[str, Any] = dict(message)
    changed[key] = str(changed[key])
    with pytest.raises(MalformedLineError, match=key):
        parse_line(json.dumps(changed))


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"[]",
        b'{"camera": "street"}',
        b'{"type": "progress", "camera": "street"}',
        b'{"type": "error", "camera": "street", "kind": "disk", "message": "full"}',
        b'{"type": "health", "camera": "street", "state": "fine"}',
    ],
)
def test_lines_that_are_no_message(line: bytes) -> None:
    with pytest.raises(MalformedLineError):
        parse_line(line)


def test_the_exit_codes_are_the_documented_numbers() -> None:
    assert {code.name: int(code) for code in WorkerExit} == {
        "OK": 0,
        "FAILURE": 1,
        "BAD_INPUT": 2,
    }


def test_the_command_starts_the_worker_module_with_the_section_as_json() -> None:
    camera = CameraConfig.model_validate(
        {
            "source": "rtsp://cam/1",
            "model": "/m.onnx",
            "lines": {"a": {"from": [0, 0], "to": [9, 9]}},
        }
    )
    argv = command("/usr/bin/python3", "street", camera)
    assert argv[:3] == ["/usr/bin/python3", "-m", WORKER_MODULE]
    assert argv[argv.index("--camera") + 1] == "street"
    assert CameraConfig.model_validate_json(argv[argv.index("--config") + 1]) == camera
    assert "--exit-with-stdin" in argv
