"""Log output: JSON lines for the journal, readable text on a terminal, levels filtered."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from smartpole.agent import logs


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_json_lines_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    logs.configure("info", "auto", out)
    structlog.get_logger("t").info("device_online", device="weather", unit_id=1)
    structlog.get_logger("t").debug("too_detailed")
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "device_online"
    assert event["device"] == "weather"
    assert event["unit_id"] == 1
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z")


def test_readable_key_values_on_a_terminal() -> None:
    out = _Terminal()
    logs.configure("debug", "auto", out)
    structlog.get_logger("t").warning("device_offline", device="weather")
    text = out.getvalue()
    assert "device_offline" in text
    assert "device" in text
    assert "weather" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_standard_library_loggers_share_the_format_and_level() -> None:
    out = io.StringIO()
    logs.configure("warning", "json", out)
    logging.getLogger("asyncio").warning("something from a library")
    logging.getLogger("asyncio").info("filtered out")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["event"] == "something from a library"
