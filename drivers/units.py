"""The units a point may have, each tied to its UNECE Recommendation 20 common code.

One table for every place a unit is read from: profiles (``unit:`` of a point), the points
the agent registers itself (the MCU's, a PTZ head's position). A unit not in it is a
profile error, so a new profile cannot publish a unit that an OPC UA client (which gets the
UNECE code as ``EngineeringUnits``, OPC UA Part 8 §5.6.3) or the platform cannot
interpret. An empty unit means the point is dimensionless: a state, an enum, a count or a
ratio such as a power factor.

The symbol and name are those of the OPC Foundation's extract of Rec. 20
(``UNECE_to_OPCUA.csv``), which Part 8 says a server shows as ``DisplayName`` and
``Description``; where that extract lacks a code (``P1`` percent, ``59`` ppm) they are
Rec. 20's own. A profile may spell a unit the way the manual does (``kWh``) as long as it
means exactly one UNECE unit.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import AfterValidator


@dataclass(frozen=True)
class UnitInfo:
    code: str  # UNECE Rec. 20 common code
    symbol: str  # as the OPC Foundation's table (or Rec. 20) writes it
    name: str

    @property
    def unit_id(self) -> int:
        """OPC UA's ``EUInformation.UnitId``: the code's ASCII bytes, up to four, as one
        big-endian integer (OPC UA Part 8 §5.6.3.4)."""
        return unit_id(self.code)


def unit_id(code: str) -> int:
    """The UnitId of a UNECE common code, by Part 8's algorithm: for each character (at most
    four), shift left eight bits and add its code."""
    if not 1 <= len(code) <= 4 or not code.isascii():
        raise ValueError(f"not a UNECE common code: {code!r}")
    value = 0
    for char in code:
        value = (value << 8) | ord(char)
    return value


def _u(code: str, symbol: str, name: str) -> UnitInfo:
    return UnitInfo(code, symbol, name)


#: Our unit strings (as profiles and the agent write them) -> UNECE unit.
UNITS: Final[dict[str, UnitInfo]] = {
    # electrical
    "V": _u("VLT", "V", "volt"),
    "mV": _u("2Z", "mV", "millivolt"),
    "kV": _u("KVT", "kV", "kilovolt"),
    "A": _u("AMP", "A", "ampere"),
    "mA": _u("4K", "mA", "milliampere"),
    "W": _u("WTT", "W", "watt"),
    "kW": _u("KWT", "kW", "kilowatt"),
    "VA": _u("D46", "V·A", "volt - ampere"),
    "kVA": _u("KVA", "kV·A", "kilovolt - ampere"),
    "var": _u("D44", "var", "var"),
    "kvar": _u("KVR", "kvar", "kilovar"),
    "Wh": _u("WHR", "W·h", "watt hour"),
    "kWh": _u("KWH", "kW·h", "kilowatt hour"),
    "MWh": _u("MWH", "MW·h", "megawatt hour (1000 kW.h)"),
    # Reactive energy: Rec. 20 has no var hour, only the kilo- one (K3).
    "kvarh": _u("K3", "kvar·h", "kilovolt ampere (reactive) hour"),
    "Hz": _u("HTZ", "Hz", "hertz"),
    # time
    "ms": _u("C26", "ms", "millisecond"),
    "s": _u("SEC", "s", "second [unit of time]"),
    "min": _u("MIN", "min", "minute [unit of time]"),
    "h": _u("HUR", "h", "hour"),
    "d": _u("DAY", "d", "day"),
    # temperature, light, sound
    "°C": _u("CEL", "°C", "degree Celsius"),
    "K": _u("KEL", "K", "kelvin"),
    "lx": _u("LUX", "lx", "lux"),
    "dB": _u("2N", "dB", "decibel"),
    # ratios of the same quantity
    "%": _u("P1", "%", "percent"),
    # relative humidity: a percentage; Part 8 shows the UNECE symbol, "%"
    "%RH": _u("P1", "%", "percent"),
    "ppm": _u("59", "ppm", "part per million"),
    # length, angle, speed, acceleration
    "mm": _u("MMT", "mm", "millimetre"),
    "cm": _u("CMT", "cm", "centimetre"),
    "m": _u("MTR", "m", "metre"),
    "km": _u("KMT", "km", "kilometre"),
    "°": _u("DD", "°", "degree [unit of angle]"),
    "m/s": _u("MTS", "m/s", "metre per second"),
    "km/h": _u("KMH", "km/h", "kilometre per hour"),
    "mm/h": _u("H67", "mm/h", "millimetre per hour"),
    # standard gravity (an impact's peak acceleration); "g" alone would be the gram
    "gn": _u("K40", "gn", "standard acceleration of free fall"),
    "m/s²": _u("MSK", "m/s²", "metre per second squared"),
    # pressure
    "Pa": _u("PAL", "Pa", "pascal"),
    "hPa": _u("A97", "hPa", "hectopascal"),
    "kPa": _u("KPA", "kPa", "kilopascal"),
    "bar": _u("BAR", "bar", "bar [unit of pressure]"),
    "mbar": _u("MBR", "mbar", "millibar"),
    # concentration, irradiance, volume
    "µg/m³": _u("GQ", "µg/m³", "microgram per cubic metre"),
    "mg/m³": _u("GP", "mg/m³", "milligram per cubic metre"),
    "W/m²": _u("D54", "W/m²", "watt per square metre"),
    "l": _u("LTR", "l", "litre"),
    "m³": _u("MTQ", "m³", "cubic metre"),
}

# ASCII spellings a profile author may reach for, to point at the symbol we use.
_SPELLINGS: Final[dict[str, str]] = {
    "deg": "°",
    "degC": "°C",
    "ug/m3": "µg/m³",
    "μg/m³": "µg/m³",  # GREEK SMALL LETTER MU, not MICRO SIGN
    "mg/m3": "mg/m³",
    "m3": "m³",
    "m/s2": "m/s²",
    "g": "gn",
    "RH": "%RH",
    "VAr": "var",
    "kVAr": "kvar",
    "kVArh": "kvarh",
    "lux": "lx",
    "sec": "s",
    "hr": "h",
    "db(a)": "dB",
    "dba": "dB",
}


def _hint(unit: str) -> str | None:
    if unit in _SPELLINGS:
        return _SPELLINGS[unit]
    folded = unit.casefold()
    for spelling, symbol in (*_SPELLINGS.items(), *((u, u) for u in UNITS)):
        if spelling.casefold() == folded:
            return symbol
    return next(iter(difflib.get_close_matches(unit, UNITS, 1)), None)


def unknown_unit_message(unit: str) -> str:
    hint = _hint(unit)
    message = f"unknown unit {unit!r}: not in the UNECE unit table (drivers/units.py)"
    if hint is not None:
        return f"{message}; did you mean {hint!r}?"
    return f"{message}; known: {', '.join(UNITS)}; leave it empty for a dimensionless value"


def known_unit(unit: str) -> str:
    """A point's unit, checked: empty (dimensionless) or one of :data:`UNITS`."""
    if unit and unit not in UNITS:
        raise ValueError(unknown_unit_message(unit))
    return unit


#: The ``unit`` field of a point in a profile.
Unit = Annotated[str, AfterValidator(known_unit)]
