"""The ``v2x:`` section: where the pole's camera workers send roadside messages (RSM, RSI).

The RSU's broker is usually not the city platform's, so it has a section of its own rather
than a topic under ``uplink:``. The daemon only checks it and hands it to each camera
worker as ``--v2x JSON`` (``camera_worker.command``); the worker validates it with this
same model and publishes on ``V2X/RSU/<rsu_id>/RSM/UP[/<rsm_topic_suffix>]`` and
``V2X/RSU/<rsu_id>/RSI/UP[/<rsi_topic_suffix>]`` (QoS 0, never retained, never queued: a message
that cannot go now is dropped and counted, see docs/v2x.md). Like ``uplink:``, the
credentials are files (0600, provisioned with the box), never in the pole file; the
worker gets their absolute paths, never their contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartpole.agent.config.uplink import TlsConfig

#: One MQTT topic level: no separators or wildcards.
TopicLevel = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Location = tuple[str | int, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class V2xConfig(_Strict):
    """The RSU's MQTT broker, the pole's RSU id, and the message rate and limits."""

    host: str = Field(min_length=1, description="the RSU's (or edge platform's) MQTT broker")
    port: int | None = Field(None, ge=1, le=65535, description="default 1883, 8883 with TLS")
    tls: TlsConfig | None = None
    username_file: str | None = None
    password_file: str | None = None
    rsu_id: TopicLevel = Field(description="the RSU's id in the topics (OpenV2X: its ESN)")
    # OpenV2X's edge (cerebrum) picks the parser of an uplink message by the topic's last
    # level: none is the standard RSM; ``dawnline`` is the one that reads detection events.
    rsm_topic_suffix: TopicLevel | None = Field(
        None, description="the RSM topic's last level; none: the standard RSM (OpenV2X)"
    )
    rsi_topic_suffix: TopicLevel | None = Field(
        "dawnline", description="the RSI topic's last level: OpenV2X's detection-event parser"
    )
    rate_hz: float = Field(10.0, gt=0, le=50, description="RSM messages per second")
    max_age_s: float = Field(
        0.2, gt=0, le=1, description="a participant not measured for this long is not sent"
    )
    queue_vehicles: int = Field(
        5, ge=1, le=200, description="stopped vehicles in a queue zone that make an RSI event"
    )

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.password_file is not None and self.username_file is None:
            raise ValueError("v2x: password_file needs a username_file")
        return self

    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    def rsm_topic(self) -> str:
        return _topic(self.rsu_id, "RSM", self.rsm_topic_suffix)

    def rsi_topic(self) -> str:
        return _topic(self.rsu_id, "RSI", self.rsi_topic_suffix)

    def _files(self) -> dict[Location, str]:
        named: dict[Location, str | None] = {
            ("username_file",): self.username_file,
            ("password_file",): self.password_file,
        }
        if self.tls is not None:
            named |= {
                ("tls", "ca_file"): self.tls.ca_file,
                ("tls", "cert_file"): self.tls.cert_file,
                ("tls", "key_file"): self.tls.key_file,
            }
        return {loc: name for loc, name in named.items() if name is not None}

    def problems(self, config_dir: Path) -> list[tuple[Location, str]]:
        """What the schema cannot see: named files that are not there."""
        out: list[tuple[Location, str]] = []
        for loc, name in self._files().items():
            if not _is_file(config_dir / name):
                where = "" if Path(name).is_absolute() else f" ({config_dir / name})"
                out.append((loc, f"no file {name!r}{where}"))
        return out

    def for_worker(self, config_dir: Path) -> V2xConfig:
        """This section with its files as absolute paths, for a worker whose working
        directory is not the config file's folder."""

        def absolute(name: str | None) -> str | None:
            return None if name is None else str((config_dir / name).resolve())

        tls = self.tls
        if tls is not None:
            tls = tls.model_copy(
                update={
                    "ca_file": absolute(tls.ca_file),
                    "cert_file": absolute(tls.cert_file),
                    "key_file": absolute(tls.key_file),
                }
            )
        return self.model_copy(
            update={
                "tls": tls,
                "username_file": absolute(self.username_file),
                "password_file": absolute(self.password_file),
            }
        )


def _topic(rsu_id: str, message: str, suffix: str | None) -> str:
    base = f"V2X/RSU/{rsu_id}/{message}/UP"
    return f"{base}/{suffix}" if suffix else base


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
