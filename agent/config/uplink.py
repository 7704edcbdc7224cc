"""The ``uplink:`` section of a pole configuration: how the pole reaches the city broker.

Secrets never live in the pole file: the username and password are read from files (0600,
provisioned with the box) and never logged. TLS verifies the broker's certificate unless
``insecure: true`` is written explicitly, which is meant for a bench, never a street.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.config.commands import CommandsConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TlsConfig(_Strict):
    ca_file: str | None = Field(
        None, description="CA bundle that signs the broker; None: the system's trust store"
    )
    cert_file: str | None = Field(None, description="client certificate (mutual TLS)")
    key_file: str | None = Field(None, description="the client certificate's private key")
    insecure: bool = Field(
        False, description="skip server verification (bench only; logged as a warning)"
    )

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together")
        return self


class BackoffConfig(_Strict):
    initial_s: float = Field(1.0, gt=0, le=600)
    max_s: float = Field(60.0, gt=0, le=3600)
    jitter: float = Field(
        0.5, ge=0, le=1, description="each delay is scaled by a random factor in [1-j, 1+j]"
    )

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.max_s < self.initial_s:
            raise ValueError("backoff: max_s must not be below initial_s")
        return self


class TelemetryConfig(_Strict):
    enabled: bool = True
    deadbands: dict[str, float] = Field(
        default_factory=dict,
        description="'device.point' glob -> smallest change reported; first match wins; "
        "points matching none report any change",
    )
    flush_interval_s: float = Field(
        1.0, gt=0, le=3600, description="changes are batched into one record per interval"
    )
    integrity_period_s: float = Field(
        900.0, gt=0, le=86400, description="a full report of every point this often"
    )

    @model_validator(mode="after")
    def _non_negative(self) -> Self:
        for pattern, band in self.deadbands.items():
            if band < 0:
                raise ValueError(f"telemetry deadband for {pattern!r} is negative")
        return self


class OutboxLimits(_Strict):
    max_bytes: int | None = Field(None, ge=65536, description="outbox file size bound")
    max_age_s: float | None = Field(None, gt=0, description="oldest record kept")


class UplinkConfig(_Strict):
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535, description="default 1883, 8883 with TLS")
    protocol: Literal["5", "3.1.1"] = "5"
    fallback_311: bool = Field(
        True, description="retry with MQTT 3.1.1 when the broker refuses version 5"
    )
    tls: TlsConfig | None = None
    username_file: str | None = None
    password_file: str | None = None
    client_id: str | None = Field(None, max_length=128, description="default: the pole id")
    keepalive_s: int = Field(30, ge=5, le=3600)
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    publish_timeout_s: float = Field(10.0, gt=0, le=120, description="wait for a PUBACK")
    backoff: BackoffConfig = BackoffConfig()
    replay_rate_per_s: float = Field(
        50.0, gt=0, le=100000, description="records per second at most, backlog included"
    )
    replay_burst: int = Field(20, ge=1, le=10000, description="records sent back to back")
    window: int = Field(16, ge=1, le=1000, description="publishes awaiting a PUBACK at once")
    idle_poll_s: float = Field(
        0.25, gt=0, le=10, description="how often an idle uplink looks for new records"
    )
    telemetry: TelemetryConfig = TelemetryConfig()
    commands: CommandsConfig | None = Field(
        None, description="platform commands on the cmd topic; absent: not subscribed"
    )
    outbox: OutboxLimits = OutboxLimits()

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.password_file is not None and self.username_file is None:
            raise ValueError("uplink: password_file needs a username_file")
        return self

    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    def resolve(self, path: str | None, base: Path) -> Path | None:
        """A file named in the config, relative to the config file's folder."""
        if path is None:
            return None
        candidate = Path(path)
        return candidate if candidate.is_absolute() else base / candidate
