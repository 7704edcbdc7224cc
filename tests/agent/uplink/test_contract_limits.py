"""The command limits are one constant each (``config/command_limits.py``), and the schema,
the docs, the config and the parser all say the same numbers."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from helpers.contract import DOCS, SCHEMAS
from smartpole.agent.config import command_limits as limits
from smartpole.agent.config.commands import CommandsConfig
from smartpole.agent.uplink import command_schema
from smartpole.agent.uplink.command_answers import id_of

REQUEST = json.loads((SCHEMAS / "command-request.schema.json").read_text())
RESULT = json.loads((SCHEMAS / "command-result.schema.json").read_text())


def test_the_schemas_state_the_constants() -> None:
    assert REQUEST["x-limits"] == limits.limits()
    assert REQUEST["properties"]["id"]["pattern"] == limits.ID_PATTERN
    assert RESULT["properties"]["data"]["properties"]["id"]["pattern"] == limits.ID_PATTERN
    assert REQUEST["properties"]["actor"]["pattern"] == limits.ACTOR_PATTERN
    assert REQUEST["properties"]["signature"]["pattern"] == limits.SIGNATURE_PATTERN
    assert f"{limits.DEFAULT_MAX_PAYLOAD_BYTES:,} bytes by default" in REQUEST["description"]
    skew = REQUEST["properties"]["issued_at"]["description"]
    assert f"{limits.DEFAULT_MAX_SKEW_S:g} s by default" in skew
    assert f"1 to {limits.MAX_ID_CHARS} characters" in REQUEST["properties"]["id"]["description"]


def test_the_config_defaults_and_bounds_are_the_constants() -> None:
    config = CommandsConfig()
    assert config.max_payload_bytes == limits.DEFAULT_MAX_PAYLOAD_BYTES
    assert config.max_skew_s == limits.DEFAULT_MAX_SKEW_S
    for size in (limits.MIN_MAX_PAYLOAD_BYTES, limits.MAX_MAX_PAYLOAD_BYTES):
        assert CommandsConfig(max_payload_bytes=size).max_payload_bytes == size
    for size in (limits.MIN_MAX_PAYLOAD_BYTES - 1, limits.MAX_MAX_PAYLOAD_BYTES + 1):
        with pytest.raises(ValidationError):
            CommandsConfig(max_payload_bytes=size)
    CommandsConfig(max_skew_s=limits.MAX_MAX_SKEW_S, dedupe_keep_s=2 * limits.MAX_MAX_SKEW_S)
    with pytest.raises(ValidationError):
        CommandsConfig(max_skew_s=limits.MAX_MAX_SKEW_S + 1, dedupe_keep_s=30 * 86400.0)


def _limits_table() -> dict[str, str]:
    rows = re.findall(
        r"^\| (payload size|`id`|`actor`|clock skew|key) \| (.+?) \|", DOCS.read_text(), re.M
    )
    return dict(rows)


def test_the_docs_state_the_constants() -> None:
    table = _limits_table()
    assert table["payload size"] == (
        f"{limits.DEFAULT_MAX_PAYLOAD_BYTES:,} bytes by default "
        f"({limits.MIN_MAX_PAYLOAD_BYTES} to {limits.MAX_MAX_PAYLOAD_BYTES:,})"
    )
    assert table["`id`"].startswith(f"1 to {limits.MAX_ID_CHARS} printable ASCII")
    assert f"`{limits.ID_PATTERN}`" in table["`id`"]
    assert f"`{limits.ACTOR_PATTERN}`" in table["`actor`"]
    assert table["clock skew"] == (
        f"`issued_at` within {limits.DEFAULT_MAX_SKEW_S:g} s of the pole's clock by default "
        f"(at most {limits.MAX_MAX_SKEW_S:,.0f})"
    )
    assert table["key"] == f"at least {limits.MIN_KEY_BYTES} bytes"
    text = DOCS.read_text()
    assert f"{limits.DEFAULT_MAX_PAYLOAD_BYTES:,} bytes by default" in text
    assert f"max_skew_s: {limits.DEFAULT_MAX_SKEW_S:g} " in text
    assert f"(≥ {limits.MIN_KEY_BYTES} bytes)" in text
    # No other size or length is claimed for a command anywhere in the docs.
    assert "128" not in text.split("## Commands from the platform")[1].split("| command |")[0]


@given(st.text(max_size=70) | st.from_regex(r"\A[!-~]{60,70}\Z"))
def test_the_parser_and_the_echo_agree_on_what_an_id_is(value: str) -> None:
    fits = re.fullmatch(limits.ID_PATTERN.strip("^$"), value) is not None
    assert limits.valid_id(value) == fits
    assert (id_of({"id": value}) == value) == fits
    request = {"id": value, "issued_at": 1.0, "actor": "ops", "command": "report_now"}
    try:
        command_schema.parse_envelope(request)
    except command_schema.CommandError:
        parsed = False
    else:
        parsed = True
    assert parsed == fits


@pytest.mark.parametrize("length", [limits.MAX_ID_CHARS, limits.MAX_ID_CHARS + 1])
def test_the_id_limit_is_exactly_the_constant(length: int) -> None:
    assert limits.valid_id("x" * length) == (length <= limits.MAX_ID_CHARS)
