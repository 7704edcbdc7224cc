"""Load a pole configuration and every profile it references, and list every problem.

Validation runs in layers that do not stop each other: YAML syntax, then the typed schema of
each file, then the references between files. A technician at the pole fixes everything in
one round instead of one error per restart.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from smartpole.agent.config.alarms import rule_problems
from smartpole.agent.config.buses import BusConfig, PointKinds
from smartpole.agent.config.pole import NamePattern, PoleConfig, pole_model
from smartpole.agent.config.power import power_rule_problems
from smartpole.agent.config.problems import problem_from_error, validate
from smartpole.agent.config.profile_path import DEFAULT, ProfilePath
from smartpole.agent.config.yamlsource import YamlDocument, load_yaml
from smartpole.agent.core.errors import ConfigError, Problem
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.schema import ProfileInfo


@dataclass(frozen=True)
class PoleSchema:
    """What the loader needs to know of the bus protocols: the bus types a pole config may
    have and the profile models their devices may have (``protocol`` tells them apart; a
    profile without one is ``default_protocol``). The bus registry makes it from the
    registered protocols, so the config tree never imports a bus task."""

    buses: tuple[type[BusConfig], ...]
    profiles: tuple[type[ProfileInfo], ...]
    default_protocol: str = "modbus"

    @property
    def pole(self) -> type[PoleConfig]:
        return pole_model(self.buses)

    @functools.cached_property
    def profile_models(self) -> dict[str, type[ProfileInfo]]:
        return {tag_of(model, "protocol"): model for model in self.profiles}

    @functools.cached_property
    def bus_models(self) -> dict[str, type[BusConfig]]:
        return {tag_of(model, "type"): model for model in self.buses}

    @functools.cached_property
    def _profile_adapter(self) -> TypeAdapter[ProfileInfo]:
        union: Any = (
            Annotated[Union[self.profiles], Field(discriminator="protocol")]  # noqa: UP007
            if len(self.profiles) > 1
            else self.profiles[0]
        )
        adapter: TypeAdapter[ProfileInfo] = TypeAdapter(union)
        return adapter

    def parse_profile(self, data: object) -> ProfileInfo:
        """Validate raw profile data (a mapping from YAML); raises pydantic's
        ValidationError."""
        if isinstance(data, dict) and "protocol" not in data:
            data = {**data, "protocol": self.default_protocol}
        return self._profile_adapter.validate_python(data)


def tag_of(model: type[BaseModel], field: str) -> str:
    """The one value a model's ``Literal`` tag field takes (a bus's ``type``, a profile's
    ``protocol``)."""
    annotation = model.model_fields[field].annotation
    values = get_args(annotation)
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"{model.__name__}.{field} must be one Literal string")
    return values[0]


@dataclass(frozen=True)
class LoadedConfig:
    """A pole configuration that passed every check, with the profiles it uses."""

    path: Path
    pole: PoleConfig
    profiles: Mapping[str, ProfileInfo]
    #: The file each profile was loaded from (which folder of ``profiles_dir`` won).
    profile_files: Mapping[str, Path] = field(default_factory=dict)

    def profile_of(self, device: str) -> ProfileInfo:
        return self.profiles[self.pole.devices[device].profile]

    def modbus_profile_of(self, device: str) -> ModbusProfile:
        """The profile of a device on a Modbus bus (the config check guarantees the kind)."""
        profile = self.profile_of(device)
        if not isinstance(profile, ModbusProfile):
            raise TypeError(f"device {device} has a {profile.protocol} profile, not Modbus")
        return profile


def load_config(path: Path, schema: PoleSchema) -> LoadedConfig:
    """Load and check; raise ConfigError listing every problem in every file."""
    doc = load_yaml(path)
    problems = list(doc.problems)
    pole, schema_problems = validate(doc, schema.pole)
    problems += schema_problems
    raw = _mapping(doc.data)
    search = _profile_path(raw.get("profiles_dir", DEFAULT), path)
    profiles, files, profile_problems = _load_profiles(doc, search, schema)
    problems += profile_problems
    problems += _check_references(doc, profiles, schema)
    if pole is not None and not problems and pole.lighting is not None:
        lamps = pole.lamps(
            lambda d: getattr(profiles[pole.devices[d].profile], "lease", None) is not None
        )
        checks = pole.lighting.cross_check(lamps, site=pole.site, devices=list(pole.devices))
        problems += [doc.problem(loc, msg) for loc, msg in checks]
    if pole is not None and not problems:
        points_of = _points_of(pole, profiles)
        problems += [
            doc.problem(loc, msg)
            for loc, msg in [
                *rule_problems(pole.alarms, points_of),
                *power_rule_problems(pole.power, points_of),
            ]
        ]
    if pole is not None:
        for name, camera in pole.cameras.items():
            problems += [
                doc.problem(("cameras", name, *loc), msg)
                for loc, msg in camera.problems(path.parent, list(pole.devices), pole.site)
            ]
    if pole is not None and pole.v2x is not None:
        problems += [doc.problem(("v2x", *loc), msg) for loc, msg in pole.v2x.problems(path.parent)]
    if problems or pole is None:
        raise ConfigError(problems)
    return LoadedConfig(path, pole, profiles, files)


def _points_of(pole: PoleConfig, profiles: Mapping[str, ProfileInfo]) -> dict[str, PointKinds]:
    """Every device's points as ``(is_bool, writable)``, for checks that name points."""
    out: dict[str, PointKinds] = {}
    for name, device in pole.devices.items():
        bus = pole.buses.get(device.bus)
        named = bus.device_points() if bus is not None else None
        if named is not None:
            out[name] = named
            continue
        profile = profiles.get(device.profile)
        points = getattr(profile, "points", {}) if profile is not None else {}
        out[name] = {
            point: (bool(getattr(spec, "is_bool", False)), getattr(spec, "access", "r") == "rw")
            for point, spec in points.items()
        }
    return out


def load_profile(path: Path, schema: PoleSchema) -> ProfileInfo:
    """Load one profile file on its own (used by tests and the profile tools)."""
    doc = load_yaml(path)
    profile, problems = _validate_profile(doc, schema)
    problems = doc.problems + problems
    if profile is not None:
        problems += [doc.problem(loc, msg) for loc, msg in profile.cross_check()]
    if problems or profile is None:
        raise ConfigError(problems)
    return profile


#: An installed pole's config starts as a template of comments only: say what to do with it.


def _validate_profile(
    doc: YamlDocument, schema: PoleSchema
) -> tuple[ProfileInfo | None, list[Problem]]:
    """Profiles are a union picked by ``protocol``; errors are located without the tag."""
    if not isinstance(doc.data, dict):
        return None, [doc.problem((), "expected a mapping of keys at the top of the file")]
    models = schema.profile_models
    try:
        return schema.parse_profile(doc.data), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if error["type"] == "union_tag_invalid":
                known = ", ".join(models)
                given = doc.data.get("protocol")
                problems.append(doc.problem(("protocol",), f"unknown protocol {given!r} ({known})"))
                continue
            tag, *loc = error["loc"]
            located = {**error, "loc": tuple(loc)}
            problems.append(problem_from_error(doc, models[str(tag)], located))
        return None, problems


def _profile_path(value: object, path: Path) -> ProfilePath | None:
    """The search path as written; None when it is not a string or list of strings
    (the schema reports that)."""
    if isinstance(value, str) and value:
        return ProfilePath.of(value, path)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return ProfilePath.of(value, path)
    return None


def _load_profiles(
    doc: YamlDocument, search: ProfilePath | None, schema: PoleSchema
) -> tuple[dict[str, ProfileInfo], dict[str, Path], list[Problem]]:
    profiles: dict[str, ProfileInfo] = {}
    files: dict[str, Path] = {}
    problems: list[Problem] = []
    devices = doc.data.get("devices") if isinstance(doc.data, dict) else None
    if not isinstance(devices, dict) or search is None:
        return profiles, files, problems
    listed = isinstance(_mapping(doc.data).get("profiles_dir"), list)
    for index, message in search.missing():
        key: tuple[str | int, ...] = ("profiles_dir", index) if listed else ("profiles_dir",)
        if ("profiles_dir",) not in doc.lines:
            key = ()
        problems.append(doc.problem(key, message))
    if problems:
        return profiles, files, problems
    failed: set[str] = set()
    for device, settings in devices.items():
        name = settings.get("profile") if isinstance(settings, dict) else None
        if not isinstance(name, str) or name in profiles or name in failed:
            continue
        if not re.fullmatch(NamePattern, name):
            continue  # the schema reports it; never a path out of the profiles folders
        file = search.find(name)
        if file is None:
            problems.append(doc.problem(("devices", device, "profile"), search.unknown(name)))
            failed.add(name)
            continue
        try:
            profiles[name] = load_profile(file, schema)
            files[name] = file
        except ConfigError as exc:
            problems += exc.problems
            failed.add(name)
    return profiles, files, problems


def _check_references(
    doc: YamlDocument, profiles: Mapping[str, ProfileInfo], schema: PoleSchema
) -> list[Problem]:
    """Checks across sections and files, done on the raw data so they always run."""
    data = doc.data if isinstance(doc.data, dict) else {}
    buses = _mapping(data.get("buses"))
    problems: list[Problem] = []
    taken: dict[tuple[object, str, str], str] = {}
    for key, settings in _mapping(data.get("devices")).items():
        if isinstance(settings, dict):
            problems += _device_problems(doc, key, settings, buses, profiles, schema, taken)
    return problems


def _device_problems(
    doc: YamlDocument,
    key: str | int,
    settings: dict[str, Any],
    buses: dict[Any, Any],
    profiles: Mapping[str, ProfileInfo],
    schema: PoleSchema,
    taken: dict[tuple[object, str, str], str],
) -> list[Problem]:
    problems: list[Problem] = []
    bus = settings.get("bus")
    if isinstance(bus, str) and bus not in buses:
        known = ", ".join(str(b) for b in buses) or "none"
        problems.append(
            doc.problem(("devices", key, "bus"), f"no bus named {bus!r} (buses: {known})")
        )
    bus_type = _mapping(buses.get(bus)).get("type") if isinstance(bus, str) else None
    model = schema.bus_models.get(str(bus_type))
    if model is None:
        return problems
    profile = profiles.get(str(settings.get("profile")))
    if profile is not None and profile.protocol != model.profile_protocol:
        problems.append(
            doc.problem(
                ("devices", key, "profile"),
                f"profile {settings.get('profile')!r} speaks {profile.protocol} "
                f"but bus {bus!r} is {bus_type}",
            )
        )
    addressing = model.addressing
    needed = addressing.key
    if needed is None:
        what = addressing.what
        return problems + _single_device_problems(doc, key, settings, bus, bus_type, what, taken)
    other_key = "address" if needed == "unit_id" else "unit_id"
    if settings.get(other_key) is not None:
        problems.append(
            doc.problem(
                ("devices", key, other_key), f"{other_key} does not apply to a {bus_type} bus"
            )
        )
    ident = settings.get(needed)
    if ident is None:
        return [
            *problems,
            doc.problem(("devices", key), f"{needed} is required: {addressing.what}"),
        ]
    label = addressing.label
    other = taken.setdefault((bus, needed, _ident_key(ident)), str(key))
    if other != str(key):
        first = doc.line_of(("devices", other, needed))
        where = f" (line {first})" if first is not None else ""
        problems.append(
            doc.problem(
                ("devices", key, needed),
                f"{label} {ident!r} on bus {bus!r} is already used by device {other!r}{where}",
            )
        )
    low, high = addressing.low, addressing.high
    if _outside(ident, low, high):
        problems.append(
            doc.problem(
                ("devices", key, needed),
                f"a {bus_type} {label} is {low} to {high} (got {ident})",
            )
        )
    return problems


def _ident_key(ident: object) -> str:
    """One spelling per address, so that ``1``, ``01``, ``"1"``, ``1.0`` and ``true`` (which
    the schema refuses, but this check runs on the raw data) all collide on one bus."""
    if isinstance(ident, bool | int):
        return str(int(ident))
    if isinstance(ident, float) and ident.is_integer():
        return str(int(ident))
    text = str(ident).strip()
    return (text.lstrip("0") or "0") if _is_number(text) else text


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # not "²", which isdigit() but int() refuses


def _outside(ident: object, low: int | None, high: int | None) -> bool:
    """An address outside the bus type's range (only for types that have one)."""
    text = str(ident).lstrip("0") or "0"
    if low is None or high is None or not _is_number(text):
        return False
    # int() refuses more than 4300 digits; any number that long is outside anyway.
    return len(text) > len(str(high)) or not low <= int(text) <= high


def _single_device_problems(
    doc: YamlDocument,
    key: str | int,
    settings: dict[str, Any],
    bus: object,
    bus_type: object,
    what: str,
    taken: dict[tuple[object, str, str], str],
) -> list[Problem]:
    """A bus that carries exactly one device, which has no address (the pole MCU)."""
    problems = [
        doc.problem(("devices", key, name), f"{name} does not apply to a {bus_type} bus")
        for name in ("unit_id", "address")
        if settings.get(name) is not None
    ]
    other = taken.setdefault((bus, "single", ""), str(key))
    if other != str(key):
        problems.append(
            doc.problem(("devices", key, "bus"), f"bus {bus!r} already carries {what} {other!r}")
        )
    return problems


def _mapping(value: object) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}
