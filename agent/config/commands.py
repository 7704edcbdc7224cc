"""The ``uplink.commands`` section: who may send which platform command, and how commands
are checked (signature, time window, size, how long ids are remembered)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.config.command_limits import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_SKEW_S,
    MAX_MAX_PAYLOAD_BYTES,
    MAX_MAX_SKEW_S,
    MIN_MAX_PAYLOAD_BYTES,
)

CommandName = Literal[
    "set_level",
    "override",
    "clear_override",
    "relay",
    "power_cycle",
    "ptz_preset",
    "ack_alarm",
    "report_now",
]
COMMANDS: tuple[str, ...] = get_args(CommandName)


class CommandsConfig(BaseModel):
    """``uplink.commands`` in the pole config: who may do what, and how commands are checked.

    The default allow-list is empty: a pole accepts no command until its config says who may
    send which (least functionality, IEC 62443-4-2).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    allow: dict[str, list[CommandName | Literal["*"]]] = Field(
        default_factory=dict,
        description='actor glob -> command names or "*", e.g. {"ops-*": ["set_level"]}',
    )
    hmac_key_file: Annotated[Path, Field(strict=False)] | None = Field(
        None,
        description="file holding the per-pole HMAC-SHA256 key; when set, every command "
        "must be signed. Re-read when the file changes (key rotation without restart).",
    )
    previous_hmac_key_file: Annotated[Path, Field(strict=False)] | None = Field(
        None,
        description="the key being rotated out: commands signed with it are accepted too, "
        "while this file exists (`smartpole keys rotate` writes it; remove it to end the "
        "overlap). A missing file is no problem.",
    )
    max_skew_s: float = Field(
        DEFAULT_MAX_SKEW_S,
        gt=0,
        le=MAX_MAX_SKEW_S,
        description="accepted |now - issued_at|, against replay",
    )
    offline_queue_s: int = Field(
        300,
        ge=0,
        le=7 * 86400,
        description="how long the broker keeps commands for this pole while it is offline "
        "(the MQTT session's expiry); 0: commands sent while it is offline are dropped",
    )
    max_payload_bytes: int = Field(
        DEFAULT_MAX_PAYLOAD_BYTES, ge=MIN_MAX_PAYLOAD_BYTES, le=MAX_MAX_PAYLOAD_BYTES
    )
    dedupe_keep_s: float = Field(
        86400.0, gt=0, le=30 * 86400, description="how long executed command ids are kept"
    )
    max_remembered: int = Field(
        10_000,
        ge=100,
        le=1_000_000,
        description="command ids kept at most; when all are younger than dedupe_keep_s "
        "(on the wall and the monotonic clock), a new command is refused, not an id forgotten",
    )
    rejections_audited_per_s: float = Field(
        0.2,
        gt=0,
        le=100,
        description="rejected or duplicate commands audited and logged one by one, per "
        "second on average; the rest are counted and summed up in one record per episode",
    )
    rejections_audited_burst: int = Field(
        20, ge=1, le=10_000, description="... and at most this many in a burst"
    )

    @model_validator(mode="after")
    def _previous_key_needs_a_key(self) -> Self:
        if self.previous_hmac_key_file is not None and self.hmac_key_file is None:
            raise ValueError("previous_hmac_key_file needs hmac_key_file (the current key)")
        if self.previous_hmac_key_file is not None and (
            self.previous_hmac_key_file == self.hmac_key_file
        ):
            raise ValueError("previous_hmac_key_file must not be hmac_key_file")
        return self

    @model_validator(mode="after")
    def _keep_ids_for_the_window(self) -> Self:
        # A command dated max_skew_s in the future stays acceptable until 2 x max_skew_s
        # after it arrived; forgetting its id sooner would let a replay run it again.
        if self.dedupe_keep_s < 2 * self.max_skew_s:
            raise ValueError("dedupe_keep_s must be at least 2 x max_skew_s")
        return self
