"""The ``api:`` section: how much of the daemon the local diagnostics socket may use.

The socket shares one event loop with the MCU heartbeat, the lighting tick and safety, so
its work is bounded per connection and in total: the defaults suit a technician's laptop
and a monitoring script or two, and a pole without the section gets them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: A POSIX group name as Debian's adduser accepts it (at most 32 characters).
GROUP_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"


class ApiConfig(BaseModel):
    """Limits of the local API (a client beyond them is slowed down or told ``busy``) and
    the groups whose members may use it (see ``agent/api_roles``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_connections: int = Field(
        32,
        ge=1,
        le=1024,
        description="open connections at most; one more is answered busy",
    )
    idle_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="a connection with no complete request for this long is closed",
    )
    max_request_bytes: int = Field(
        64 * 1024, ge=1024, le=1024 * 1024, description="longest request line"
    )
    requests_per_s: float = Field(
        20.0,
        gt=0,
        le=1000,
        description="sustained requests per connection; more wait their turn",
    )
    burst: int = Field(20, ge=1, le=1000, description="requests a connection may send at once")
    admin_group: str = Field(
        "smartpole-admin",
        pattern=GROUP_NAME,
        description="members may call every API method, including those that change outputs",
    )
    diag_group: str = Field(
        "smartpole-diag",
        pattern=GROUP_NAME,
        description="members may call the read-only API methods; the socket's group",
    )
