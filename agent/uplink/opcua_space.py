"""Pure helpers of the OPC UA address space: units, status codes, data values.

Quality → StatusCode (OPC UA Part 4 §7.34, Part 8 for the data-access sub-codes):

* ``good`` → ``Good``;
* ``uncertain`` (a reading outside the range the manual says is possible) →
  ``UncertainEngineeringUnitsExceeded``;
* ``stale`` (not refreshed for several poll periods) → ``UncertainLastUsableValue``, which
  keeps the last value readable, as the spec intends for a source that stopped updating;
* ``bad`` → ``BadNoCommunication`` (``BadWaitingForInitialData`` before any reading); a bad
  status carries no value (asyncua nulls it, as Part 4 requires).
"""

from __future__ import annotations

import datetime as dt
import math

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from smartpole.agent.core.points import Quality
from smartpole.drivers.schema import Value

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

# Units the profiles use → UNECE Rec. 20 common codes (OPC UA Part 8 §5.6.3).
_UNECE: dict[str, str] = {
    "V": "VLT",
    "mV": "2Z",
    "A": "AMP",
    "mA": "4K",
    "W": "WTT",
    "kW": "KWT",
    "Wh": "WHR",
    "kWh": "KWH",
    "VA": "D46",
    "kVA": "KVA",
    "var": "D44",
    "kvar": "KVR",
    "Hz": "HTZ",
    "°C": "CEL",
    "%": "P1",
    "lx": "LUX",
    "s": "SEC",
    "ms": "C26",
    "h": "HUR",
    "min": "MIN",
    "m/s": "MTS",
    "km/h": "KMH",
    "hPa": "A97",
    "Pa": "PAL",
    "mm": "MMT",
    "m": "MTR",
    "°": "DD",
    "deg": "DD",
    "dB": "2N",
    "dBA": "2N",
    "ppm": "59",
    "µg/m³": "GQ",
    "ug/m3": "GQ",
    "mm/h": "H67",
}

_SEVERITY = {"critical": 900, "major": 700, "minor": 500, "warning": 300}


def nid(identifier: str | int, idx: int = 0) -> ua.NodeId:
    """A NodeId, typed as asyncua's stubs want it."""
    value = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(value, ua.Int16(idx))


def status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def unece_id(code: str) -> int:
    """OPC UA's UnitId for a UNECE common code: the code's bytes as a big-endian integer."""
    unit_id = 0
    for char in code:
        unit_id = (unit_id << 8) | ord(char)
    return unit_id


def eu_information(unit: str) -> ua.EUInformation:
    code = _UNECE.get(unit)
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE if code else "",
        UnitId=unece_id(code) if code else -1,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


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
