"""The typed shape of a pole configuration file (``configs/poles/*.yaml``): the root of the
config tree, whose sections each have a module of their own here.

Strict on purpose: unknown keys are errors, because a misspelt key that is silently ignored
on a pole in the street becomes a wrong light schedule nobody notices.

``PoleConfig`` says what every pole config has; ``pole_model`` makes the model that
validates a file, with the ``buses`` union of the bus types the registry knows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Self, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from smartpole.agent.config.alarms import AlarmRule
from smartpole.agent.config.api import ApiConfig
from smartpole.agent.config.buses import BusConfig
from smartpole.agent.config.cameras import CameraConfig
from smartpole.agent.config.lighting import LightingConfig
from smartpole.agent.config.opcua import OpcUaConfig
from smartpole.agent.config.power import PowerRule
from smartpole.agent.config.site import SiteConfig
from smartpole.agent.config.uplink import UplinkConfig
from smartpole.agent.config.v2x import V2xConfig

NamePattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=NamePattern, max_length=64)]
_Folder = Annotated[str, Field(min_length=1)]
#: One folder, or folders searched in order (``agent/config/profile_path``).
ProfileFolders = _Folder | Annotated[list[_Folder], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PoleInfo(_Strict):
    id: Name = Field(description="unique in the city fleet; used in topics and logs")
    name: str = ""
    location: str = ""


class DeviceConfig(_Strict):
    """One device on a bus, described by a profile."""

    profile: Name = Field(description="file name (without .yaml) in the profiles folder")
    bus: Name
    unit_id: int | None = Field(None, ge=0, le=255, description="Modbus unit id")
    address: str | None = Field(
        None,
        pattern=r"^[0-9]{1,12}$",
        description="DL/T 645 meter address (up to 12 digits) or Pelco-D camera address",
    )
    poll_period_s: float = Field(10.0, ge=0.1, le=86400)
    offline_after: int = Field(
        3, ge=1, le=100, description="consecutive failed polls before the device is offline"
    )
    offline_probe_s: float = Field(
        60.0, ge=0.1, le=3600, description="longest interval between probes of an offline device"
    )
    description: str = ""


class PoleConfig(_Strict):
    pole: PoleInfo
    profiles_dir: ProfileFolders = Field(
        "../profiles",
        description="folder of device profiles, or a list of folders searched in order "
        "(the first holding <name>.yaml wins); relative to this file",
    )
    buses: dict[Name, BusConfig] = Field(
        min_length=1, description="bus name -> one of the registered bus types (pole_model)"
    )
    devices: dict[Name, DeviceConfig] = Field(min_length=1)
    alarms: dict[str, AlarmRule] = Field(
        default_factory=dict, description="alarm kind -> thresholds, sources and actions"
    )
    power: dict[Name, PowerRule] = Field(
        default_factory=dict, description="device -> the relay channel feeding it (power cycling)"
    )
    site: SiteConfig | None = None
    lighting: LightingConfig | None = None
    cameras: dict[Name, CameraConfig] = Field(
        default_factory=dict, description="camera -> its source, detector and counting lines"
    )
    uplink: UplinkConfig | None = None
    v2x: V2xConfig | None = Field(
        None, description="the RSU's broker: geo-calibrated cameras send RSM/RSI there"
    )
    opcua: OpcUaConfig | None = Field(
        None, description="OPC UA server for SCADA clients (secure policies only)"
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig, description="limits of the local diagnostics socket"
    )

    @model_validator(mode="after")
    def _site_for_lighting(self) -> Self:
        if self.lighting is not None and self.site is None:
            raise ValueError("a lighting section needs a site (latitude, longitude, timezone)")
        return self

    def lamps(self, has_lease: Callable[[str], bool]) -> list[str]:
        """Devices the lighting controller drives: those whose profile leases a level."""
        return [name for name in self.devices if has_lease(name)]


@functools.cache
def pole_model(bus_models: tuple[type[BusConfig], ...]) -> type[PoleConfig]:
    """``PoleConfig`` whose ``buses`` accept exactly these bus types, told apart by ``type``."""
    if not bus_models:
        raise ValueError("no bus types registered")
    member: Any = (
        Annotated[Union[bus_models], Field(discriminator="type")]  # noqa: UP007
        if len(bus_models) > 1
        else bus_models[0]
    )
    buses: Any = (dict[Name, member], Field(min_length=1))
    return create_model("PoleConfig", __base__=PoleConfig, buses=buses)
