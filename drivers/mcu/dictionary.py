"""The canonical dictionary of protocol version 1, the bytes the MCU serves.

Generated from firmware-bridge/dictionary.json by firmware-bridge/tools/make_vectors.py; do
not edit. It is a module rather than a data file because the installed package cannot
read firmware-bridge/ at run time; tests/drivers/mcu/test_vectors.py checks the two are equal.
"""

from __future__ import annotations

from typing import Final

from smartpole.drivers.mcu.msgproto import Dictionary

DICTIONARY_BYTES: Final = (
    b'{"protocol":"smartpole-mcu","version":1,"build":"smartpole-mcu 1.0.0","m'
    b'ax_frame":64,"window":4,"relays":8,"events":16,"commands":{"identify off'
    b'set=%u count=%c":0,"get_config tag=%c":2,"config_reset tag=%c":3,"config'
    b'_relay channel=%c default_on=%c max_duration_ms=%u":4,"config_fallback h'
    b'eartbeat_ms=%u level=%c lease_ms=%u":5,"config_schedule index=%c minute='
    b'%hu level=%c":6,"config_leakage trip_ua=%u relay_mask=%c":7,"config_alar'
    b'ms tilt_cdeg=%u impact_mg=%u":8,"finalize_config tag=%c crc=%u":9,"heart'
    b'beat tag=%c unix_time=%u utc_offset_min=%i":10,"set_relay tag=%c channel'
    b'=%c on=%c":11,"set_level tag=%c level=%c":12,"get_inputs tag=%c":13,"get'
    b'_event tag=%c after=%u":14,"clear_trip tag=%c":15,"get_stats tag=%c":16}'
    b',"responses":{"identify_response offset=%u data=%*s":1,"config_state tag'
    b'=%c is_config=%c crc=%u boot_id=%u":32,"status tag=%c flags=%c config_cr'
    b'c=%u boot_id=%u uptime_ms=%u last_event=%u level=%c relays=%c":33,"relay'
    b'_state tag=%c relays=%c tripped=%c":34,"level_state tag=%c level=%c sour'
    b'ce=%c":35,"inputs tag=%c door=%c water=%c photocell=%c tilt_x=%i tilt_y='
    b'%i leakage_ua=%u temp_cdeg=%i supply_mv=%u uptime_ms=%u":36,"event tag=%'
    b'c id=%u kind=%c value=%i uptime_ms=%u unix_time=%u":37,"stats tag=%c rx_'
    b'frames=%u rx_errors=%u naks=%u bad_messages=%u events_lost=%u":38,"error'
    b' tag=%c code=%c":39}}'
)

DICTIONARY: Final = Dictionary.parse(DICTIONARY_BYTES)
