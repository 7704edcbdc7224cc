"""``config check`` warnings: settings that are valid but likely wrong at the pole.

A warning never fails the check (the daemon runs with them); errors do. Each says what a
technician will see if it is left as it is, so they can judge it without the source.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from smartpole.agent.config.loader import LoadedConfig
from smartpole.drivers.modbus.plan import plan_reads
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.schema import ProfileInfo

#: Modbus' own ceilings (registers, bits per request): what a read could grow to by max_gap
#: if no declared limit held it back.
PROTOCOL_REGISTERS, PROTOCOL_BITS = 125, 2000


def warnings(config: LoadedConfig) -> list[str]:
    return _baud_warnings(config) + _gap_warnings(config.profiles) + _v2x_warnings(config)


def _v2x_warnings(config: LoadedConfig) -> list[str]:
    """A ``v2x:`` section and a camera that cannot feed it: valid (a camera may watch
    only for counts), but the RSU hears nothing from that camera."""
    if config.pole.v2x is None:
        return []
    if not config.pole.cameras:
        return ["v2x: this pole has no camera, so nothing is sent to the RSU"]
    return [
        f"camera {name} has no geo-calibration (calibration with origin and ground_en_m or"
        " ground_latlon): it sends no V2X messages"
        for name, camera in config.pole.cameras.items()
        if camera.calibration is None or camera.calibration.origin is None
    ]


def _baud_warnings(config: LoadedConfig) -> list[str]:
    """A bus baud rate other than a profile's factory default: right for a commissioned
    device, but a new or factory-reset one stays silent until readdressed."""
    devices_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, device in config.pole.devices.items():
        devices_of[(device.bus, device.profile)].append(name)
    found: list[str] = []
    for (bus_name, profile_name), devices in devices_of.items():
        bus = config.pole.buses[bus_name]
        profile = config.profiles.get(profile_name)
        defaults = getattr(profile, "transport_defaults", None)
        shipped = getattr(defaults, "baudrate", None)
        baudrate = getattr(bus, "baudrate", None)
        if shipped is None or baudrate is None or shipped == baudrate:
            continue
        found.append(
            f"bus {bus_name} runs at {baudrate} baud; profile {profile_name} ships at {shipped}"
            f" ({', '.join(sorted(devices))}): a device new from the factory or reset will not"
            f" answer until set to {baudrate} (smartpole diag readdress)"
        )
    return found


def _gap_warnings(profiles: Mapping[str, ProfileInfo]) -> list[str]:
    """A ``max_gap`` that merges reads past the declared per-request limit: the planner
    cuts them at the limit, so the limit is what the device is asked for. It must be the
    manual's figure; a device that takes fewer refuses the read (exception 3)."""
    found: list[str] = []
    for name, profile in sorted(profiles.items()):
        if not isinstance(profile, ModbusProfile) or profile.limits.max_gap == 0:
            continue
        limits = profile.limits
        unbounded = limits.model_copy(
            update={
                "max_registers_per_read": PROTOCOL_REGISTERS,
                "max_bits_per_read": PROTOCOL_BITS,
            }
        )
        for block in plan_reads(profile.points, unbounded):
            limit = limits.max_bits_per_read if block.kind.is_bit else limits.max_registers_per_read
            if block.count <= limit:
                continue
            unit = "bits" if block.kind.is_bit else "registers"
            found.append(
                f"profile {name}: limits.max_gap {limits.max_gap} would merge {block.kind} "
                f"{block.address}..{block.end - 1} into one read of {block.count} {unit}, more"
                f" than its declared limit of {limit}; reads are cut at {limit}, so check that"
                " figure against the manual (a device taking fewer refuses with exception 3)"
            )
    return found
