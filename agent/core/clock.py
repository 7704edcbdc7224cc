"""Whether the wall clock can be trusted for schedules, MCU time and anything dated.

A pole's edge box may boot without network time and without a battery-backed clock; its
wall clock then starts in the past, and a lighting program read from it would switch the
lights at the wrong hours. Every part that needs "may I believe the time?" asks here.
"""

from __future__ import annotations

from pathlib import Path


def clock_is_synchronised(
    synced_flag: Path = Path("/run/systemd/timesync/synchronized"),
    rtc: Path = Path("/dev/rtc0"),
) -> bool:
    """Trust the wall clock if an NTP client said it synchronised since boot, or an RTC
    keeps time across power cuts; otherwise the lights go by the photocell."""
    return synced_flag.exists() or rtc.exists()
