"""The pole's point metadata for the platform: the retained ``meta`` topic and its hash.

The Sparkplug B "birth certificate" idea in our JSON: on every connect, before the birth,
the pole publishes (retained) every point of every device with its unit, type, wire
encoding, range, writability and resolution, so a platform needs none of our YAML. A hash
of that description travels in the birth and in every telemetry record (``data.meta``):
a record whose hash differs from the retained description's was taken under another
configuration, and a platform that sees a new hash fetches the description again.

The hash is the first 16 hex digits of SHA-256 over the ``devices`` object as canonical
JSON (keys sorted, no spaces, UTF-8, numbers as Python writes them). It covers only what
describes the points, never the time or the session, so it changes exactly when the
configuration does. ``schemas/uplink/meta.schema.json`` is the contract.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.core.point_meta import PointMeta

Described = tuple[str, str, str, PointMeta | None]  # (device, point, unit, meta)


@dataclass(frozen=True)
class DeviceInfo:
    """What the pole config and the device's profile say about the device itself."""

    profile: str
    protocol: str
    model: str
    manufacturer: str
    bus: str
    description: str = ""

    def to_json(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "profile": self.profile,
            "protocol": self.protocol,
            "model": self.model,
            "manufacturer": self.manufacturer,
            "bus": self.bus,
        }
        if self.description:
            entry["description"] = self.description
        return entry


@dataclass(frozen=True)
class PoleMeta:
    """The description of every point (``devices``) and its hash, built once at start."""

    devices: Mapping[str, object] = field(default_factory=dict)
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", meta_hash(self.devices))

    def payload(self, pole: str, session: int, ts: float) -> dict[str, object]:
        """The retained message on ``smartpole/v1/<pole>/meta``."""
        return {
            "pole": pole,
            "session": session,
            "ts": round(ts, 3),
            "hash": self.hash,
            "devices": self.devices,
        }


def canonical(value: object) -> bytes:
    """The one serialisation the hash is taken over (see the module docstring)."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def meta_hash(devices: object) -> str:
    return hashlib.sha256(canonical(devices)).hexdigest()[:16]


def build_meta(points: Iterable[Described], devices: Mapping[str, DeviceInfo]) -> PoleMeta:
    """Every device of ``devices`` (one without points too, with ``points: {}``) and every
    described point, grouped by device in registration order."""
    out: dict[str, dict[str, object]] = {}
    for name, info in devices.items():
        out[name] = {**info.to_json(), "points": {}}
    for device, point, unit, meta in points:
        entry = out.setdefault(device, {"points": {}})
        described = entry["points"]
        assert isinstance(described, dict)
        # A point no plug-in described (none of the shipped protocols leaves one so) still
        # goes up with its unit: never a point the platform receives but cannot look up.
        described[point] = {"unit": unit, "access": "r"} if meta is None else meta.to_json(unit)
    return PoleMeta(out)


def devices_of(config: LoadedConfig) -> dict[str, DeviceInfo]:
    """The pole config's devices with their profiles' identity."""
    devices: dict[str, DeviceInfo] = {}
    for name, device in config.pole.devices.items():
        profile = config.profile_of(name)
        devices[name] = DeviceInfo(
            profile=device.profile,
            protocol=profile.protocol,
            model=profile.model,
            manufacturer=profile.manufacturer,
            bus=device.bus,
            description=device.description or profile.description,
        )
    return devices
