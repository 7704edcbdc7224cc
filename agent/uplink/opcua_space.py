"""Pure helpers of the OPC UA address space: units, status codes, data values.

Quality → StatusCode (OPC UA Part 4 §7.34, Part 8 for the data-access sub-codes):

* ``good`` → ``Good``;
* ``uncertain`` (a reading outside the range the manual says is possible) →
  ``UncertainEngineeringUnitsExceeded``;
* ``stale`` (not refreshed for several poll periods) → ``UncertainLastUsableValue``, which
  keeps the last value readable, as the spec intends for a source that stopped updating;
* ``bad`` → ``BadNoCommunication`` (``BadWaitingForInitialData`` before any reading); a bad
  status carries no value (asyncua nulls it, as Part 4 requires);
* ``unknown`` (never read since the start) → ``BadWaitingForInitialData``.
"""

from __future__ import annotations

import datetime as dt
import math

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.core.points import Quality
from smartpole.drivers.schema import Value
from smartpole.drivers.units import UNITS

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

_SEVERITY = {"critical": 900, "major": 700, "minor": 500, "warning": 300}


def nid(identifier: str | int, idx: int = 0) -> ua.NodeId:
    """A NodeId, typed as asyncua's stubs want it."""
    value = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(value, ua.Int16(idx))


def status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def eu_information(unit: str) -> ua.EUInformation | None:
    """The ``EngineeringUnits`` of a point with this unit (OPC UA Part 8 §5.6.3: the UNECE
    code as UnitId, its symbol and name); None for a dimensionless point, which has none.
    Every unit a pole registers is in the table (profiles are checked when they load, the
    agent's own points by a test); one that is not still shows its text, with UnitId -1."""
    if not unit:
        return None
    info = UNITS.get(unit)
    if info is None:
        text = ua.LocalizedText(unit)
        return ua.EUInformation(NamespaceUri="", UnitId=-1, DisplayName=text, Description=text)
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE,
        UnitId=info.unit_id,
        DisplayName=ua.LocalizedText(info.symbol),
        Description=ua.LocalizedText(info.name),
    )


def eu_range(valid_range: tuple[float, float] | None) -> ua.Range | None:
    """The ``EURange`` of a point: the range its profile says a reading can have."""
    if valid_range is None:
        return None
    low, high = valid_range
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        return None
    return ua.Range(Low=float(low), High=float(high))


def valid_ranges(config: LoadedConfig) -> dict[tuple[str, str], tuple[float, float]]:
    """Each point's ``valid_range`` from its device's profile, by ``(device, point)``."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for device in config.pole.devices:
        for point, spec in getattr(config.profile_of(device), "points", {}).items():
            valid_range = getattr(spec, "valid_range", None)
            if valid_range is not None:
                out[(device, point)] = (float(valid_range[0]), float(valid_range[1]))
    return out


def severity(name: object) -> int:
    return _SEVERITY.get(str(name), 500)


def variant_type_for(value: Value | None) -> ua.VariantType:
    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, str):
        return ua.VariantType.String
    return ua.VariantType.Double  # numbers (and points without a reading yet)


def status_for(quality: Quality, value: Value | None) -> ua.StatusCode:
    if value is None:
        return status(StatusCodes.BadWaitingForInitialData)
    code = {
        Quality.GOOD: StatusCodes.Good,
        Quality.UNCERTAIN: StatusCodes.UncertainEngineeringUnitsExceeded,
        Quality.STALE: StatusCodes.UncertainLastUsableValue,
        Quality.BAD: StatusCodes.BadNoCommunication,
        Quality.UNKNOWN: StatusCodes.BadWaitingForInitialData,
    }[quality]
    return status(code)


def _coerce(value: Value | None, vtype: ua.VariantType) -> Value | None:
    """The value as the variable's type, or None if it does not fit."""
    if value is None:
        return None
    if vtype is ua.VariantType.Double:
        if isinstance(value, bool | str):
            return None
        return float(value)
    if vtype is ua.VariantType.Boolean:
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def data_value(
    value: Value | None, quality: Quality, at: float | None, vtype: ua.VariantType
) -> ua.DataValue:
    """The DataValue of one reading; a value that does not fit the variable's type is
    ``BadTypeMismatch`` (and carries no value)."""
    coerced = _coerce(value, vtype)
    if value is not None and coerced is None:
        status_ = status(StatusCodes.BadTypeMismatch)
    elif isinstance(coerced, float) and not math.isfinite(coerced):
        status_ = status(StatusCodes.BadOutOfRange)
    else:
        status_ = status_for(quality, value)
    now = ua.DateTime.now(dt.UTC)
    source = now if at is None else ua.DateTime.fromtimestamp(at, dt.UTC)
    variant = (
        ua.Variant(None, ua.VariantType.Null) if status_.is_bad() else ua.Variant(coerced, vtype)
    )
    return ua.DataValue(
        Value=variant, StatusCode=status_, SourceTimestamp=source, ServerTimestamp=now
    )
