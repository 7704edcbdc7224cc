"""The command request: the published schema and the pole's own parser (pydantic models in
``command_schema.py``) accept and reject the same requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from helpers.contract import SCHEMAS, errors
from helpers.payloads import TIMES
from smartpole.agent.uplink import command_schema

IDENTS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,8}\Z") | st.sampled_from(["", "a b"])
ANY_VALUE = (
    st.none()
    | st.booleans()
    | st.integers(-5, 300)
    | st.floats(-5, 1e6, allow_nan=False).filter(lambda f: not f.is_integer())
    | IDENTS
)
ARGS = st.dictionaries(
    st.sampled_from(
        ["lamp", "level", "point", "duration_s", "device", "on", "preset", "alarm_id", "colour"]
    ),
    ANY_VALUE,
    max_size=4,
)
REQUESTS = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"\A[!-~]{1,70}\Z") | st.just("a b"),
        "issued_at": st.floats(0, 2e9) | st.integers(0, 2 * 10**9),
        "actor": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.@:+/=-]{0,66}\Z"),
        "command": st.sampled_from([*command_schema.ARGS, "set_dim"]),
    },
    optional={"args": ARGS, "signature": st.sampled_from(["ab" * 32, "xyz"]), "ts": TIMES},
)


def _pole_accepts(request: dict[str, Any]) -> bool:
    try:
        envelope = command_schema.parse_envelope(request)
        command_schema.parse_args(envelope.command, envelope.args)
    except command_schema.CommandError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(request=REQUESTS)
def test_the_command_schema_and_the_poles_parser_accept_the_same_requests(
    request: dict[str, Any],
) -> None:
    # The one documented difference: JSON Schema's integer also matches 50.0, which the
    # pole refuses; integral floats are left out of the arguments above for that reason.
    schema_ok = not errors("command-request.schema.json", request)
    assert schema_ok == _pole_accepts(request), (
        request,
        errors("command-request.schema.json", request),
    )


def test_the_command_schema_names_exactly_the_commands_of_the_code() -> None:
    schema = json.loads((SCHEMAS / "command-request.schema.json").read_text())
    assert schema["properties"]["command"]["enum"] == list(command_schema.ARGS)


def test_the_pydantic_models_agree_with_validation_errors_being_translated() -> None:
    """The parser's errors are CommandErrors, never pydantic's, so the agreement test above
    compares answers, not exceptions."""
    with pytest.raises(command_schema.CommandError):
        command_schema.parse_args("relay", {"device": 1})
    assert not isinstance(command_schema.CommandError("x", "y"), ValidationError)
