"""The ``opcua:`` section of the pole config, apart from the server itself.

The config loader needs this model on every start; the server needs asyncua, which costs
about 25 MB of resident memory and half a second of start-up. Keeping the model here means
a pole without an ``opcua:`` section never imports asyncua at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["Sign", "SignAndEncrypt"]


def _default_modes() -> list[Mode]:
    return ["SignAndEncrypt", "Sign"]


class OpcUaConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    endpoint: str = "opc.tcp://0.0.0.0:4840/smartpole/"
    namespace: str = "urn:smartpole:opcua"
    certificate_dir: str = Field("opcua/pki", description="server certificate; under state dir")
    trust_dir: str = Field(
        "opcua/trusted", description="trusted client certificates (DER/PEM), read per connection"
    )
    rejected_dir: str = Field(
        "opcua/rejected", description="certificates of refused unknown clients, to move over"
    )
    rejected_keep: int = Field(
        100, ge=0, le=10000, description="at most this many files in rejected_dir; 0: keep none"
    )
    users_file: str | None = Field("opcua/users", description="name:pbkdf2 hash lines")
    allow_anonymous_read: bool = False
    security_modes: list[Mode] = Field(default_factory=_default_modes, min_length=1)
    refresh_s: float = Field(1.0, gt=0, le=60, description="quality (staleness) re-check period")
    alarm_poll_s: float = Field(1.0, gt=0, le=60)
    method_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a method answers 'pending' if its command runs longer"
    )
    login_free_failures: int = Field(
        3, ge=1, le=100, description="failed logins per address or user before throttling"
    )
    login_backoff_s: float = Field(1.0, gt=0, le=60, description="first throttling window")
    login_backoff_max_s: float = Field(
        300.0, gt=0, le=3600, description="the window doubles per failure up to this"
    )

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError("endpoint must be an opc.tcp:// URL")
        return value

    def path(self, state_dir: Path, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else state_dir / path
