"""The ``api:`` section: sane defaults, and a limit that is not a number is an error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smartpole.agent.config.api import ApiConfig


def test_defaults_bound_every_client() -> None:
    limits = ApiConfig()
    assert (limits.max_connections, limits.idle_timeout_s) == (32, 30.0)
    assert (limits.requests_per_s, limits.burst, limits.max_request_bytes) == (20.0, 20, 65536)


@pytest.mark.parametrize(
    "settings",
    [
        {"max_connections": 0},
        {"max_connections": True},  # YAML's yes is not one connection
        {"max_connections": 1.0},
        {"idle_timeout_s": 0},
        {"idle_timeout_s": False},
        {"max_request_bytes": 100},
        {"requests_per_s": "fast"},
        {"burst": 0},
        {"max_clients": 4},
        {"diag_group": "has space"},
        {"diag_group": 1000},  # a gid is not a group name
        {"admin_group": ""},
        {"admin_group": "-x"},
    ],
)
def test_a_wrong_limit_is_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ApiConfig.model_validate(settings)
