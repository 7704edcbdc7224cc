"""Text rendering of the daemon's state for technicians: tables that fit an 80-column laptop.

Shared by ``smartpole diag`` and ``smartpole demo`` so both show the same columns: device,
point, value, unit, quality, age.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from smartpole.agent.core.health import LEARNT_KEY

QUALITY_LEGEND = (
    "quality: good = fresh reading   uncertain = outside the sensor's measuring range\n"
    "         stale = not refreshed for 3 poll periods   unknown = never read yet\n"
    "         bad = no usable value: why in brackets, or a NaN the device sent\n"
    "         (refused) = the device answered this point's read with an exception\n"
    "         (device refusing) = it answers every read with an exception, or refused\n"
    "               every point (STATE refusing, EXC in diag status)\n"
    "         (no answer) / (garbled answers) / (port unavailable) = its STATE is\n"
    "               offline / faulty / its bus's port is gone\n"
    "         (restored) = saved before a restart, not read since (never sent upstream)"
)


def format_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= 1e9:
            return f"{value:.6g}"
        text = f"{value:.4f}".rstrip("0")  # four decimals at most: readings, not raw floats
        return text + "0" if text.endswith(".") else text
    return str(value)


def format_latency(latency_ms: float | None) -> str:
    """Sub-millisecond resolution: a TCP device on the LAN answers in 0.3 ms, not "0 ms"."""
    if latency_ms is None:
        return "-"
    if latency_ms < 10:
        return f"{latency_ms:.2f} ms"
    if latency_ms < 100:
        return f"{latency_ms:.1f} ms"
    return f"{latency_ms:.0f} ms"


def render_reading(what: str, verb: str, value: object, unit: str) -> str:
    """``diag read``/``write``: the value with its unit, as the points table shows it."""
    text = f"{what}: {verb} {format_value(value)}"
    return f"{text} {unit}" if unit and value is not None else text


def render_plan(plan: Mapping[str, Any]) -> str:
    """``diag plan`` as a table: one row per read of each device, in the order it is sent.

    Modbus reads are ``kind address+count`` (0-based, as on the wire), DL/T 645 reads their
    data identifier; a bus that polls no registers describes what it does in words."""
    rows: list[list[str]] = []
    for bus, devices in plan.items():
        for device, reads in (devices or {}).items():
            if device == LEARNT_KEY and isinstance(reads, Mapping):
                rows += [
                    [str(bus), str(name), "learnt", "", _learnt(what)]
                    for name, what in reads.items()
                ]
                continue
            items = reads if isinstance(reads, list) else [reads]
            for item in items or ["(nothing to poll)"]:
                read, count, points = _plan_row(item)
                rows.append([str(bus), str(device), read, count, points])
    if not rows:
        return "no buses polled"
    return table(["BUS", "DEVICE", "READ", "REGS", "POINTS"], rows, right=frozenset({3}))


def _learnt(what: object) -> str:
    """What a device taught the planner (refusals it answered), in the POINTS column."""
    if not isinstance(what, Mapping):
        return str(what)
    reasons = what.get("max_per_read_reason") or {}
    parts = [
        f"at most {cap} per {kind} read" + (f" ({reasons[kind]})" if kind in reasons else "")
        for kind, cap in (what.get("max_per_read") or {}).items()
    ]
    parts += [f"hole at {hole['kind']} {hole['at']}" for hole in what.get("holes") or ()]
    if what.get("unsupported"):
        parts.append("unsupported: " + ", ".join(map(str, what["unsupported"])))
    return "; ".join(parts) or "nothing"


def _plan_row(item: object) -> tuple[str, str, str]:
    if isinstance(item, Mapping):
        if {"kind", "address", "count"} <= item.keys():
            count = int(item["count"])
            address = int(item["address"])
            read = f"{item['kind']} {address}..{address + count - 1}"
            known = ("kind", "address", "count", "points")
            extra = {k: v for k, v in item.items() if k not in known}
            points = ", ".join(map(str, item.get("points") or ()))
            if extra:
                points += " (" + ", ".join(f"{k} {v}" for k, v in extra.items()) + ")"
            return read, str(count), points
        if "di" in item:
            return f"DI {item['di']}", "", str(item.get("point", ""))
        return json.dumps(item, ensure_ascii=False), "", ""
    return str(item), "", ""


def format_age(age_s: float | None) -> str:
    if age_s is None:
        return "never"
    if age_s < 60:
        return f"{age_s:.1f} s"
    if age_s < 3600:
        return f"{age_s / 60:.0f} min"
    if age_s < 86400:
        return f"{age_s / 3600:.1f} h"
    return f"{age_s / 86400:.1f} d"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()
) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def render_points(points: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            str(p["device"]),
            str(p["point"]),
            format_value(p["value"]),
            str(p["unit"]),
            str(p["quality"])
            + (" (restored)" if p.get("restored") else "")
            + (f" ({p['reason']})" if p.get("reason") else ""),
            format_age(p["age_s"]),
        ]
        for p in points
    ]
    headers = ["DEVICE", "POINT", "VALUE", "UNIT", "QUALITY", "AGE"]
    return table(headers, rows, right=frozenset({2, 5})) + "\n" + QUALITY_LEGEND


def render_devices(status: Mapping[str, Any]) -> str:
    return table(
        ["DEVICE", "BUS", "ADDRESS", "PROFILE", "STATE", "POLLS", "TIMEOUT", "CRC", "OTHER",
         "EXC", "LATENCY"],
        [_device_row(d) for d in status["devices"]],
        right=frozenset({5, 6, 7, 8, 9, 10}),
    )  # fmt: skip


def render_status(status: Mapping[str, Any]) -> str:
    name = f" ({status['pole_name']})" if status.get("pole_name") else ""
    uptime = format_age(float(status["uptime_s"])).replace(" ", "")
    lines = [
        f"pole {status['pole']}{name}: {status['summary']}",
        f"daemon pid {status['pid']}, up {uptime}, config {status['config']}",
        "",
        "BUSES",
        table(
            ["BUS", "ENDPOINT", "SETTINGS", "STATE", "REQUESTS", "UTIL", "LATE", "LAST ERROR"],
            [
                [
                    b["name"],
                    b["endpoint"],
                    b["settings"],
                    b["state"],
                    str(b["counters"]["requests"]),
                    f"{100 * b['utilisation']:.1f}%",
                    str(b.get("late_answers", 0)),
                    b["last_error"] or "",
                ]
                for b in status["buses"]
            ],
            right=frozenset({4, 5, 6}),
        ),
        "",
        "DEVICES",
        table(
            [
                "DEVICE",
                "BUS",
                "ADDRESS",
                "PROFILE",
                "STATE",
                "POLLS",
                "TIMEOUT",
                "CRC",
                "OTHER",
                "EXC",
                "LATENCY",
            ],
            [_device_row(d) for d in status["devices"]],
            right=frozenset({5, 6, 7, 8, 9, 10}),
        ),
    ]
    lines += _release_lines(status.get("releases"))
    problems = status.get("problems") or []
    lines += ["", "PROBLEMS" if problems else "no problems"]
    lines += [f"  - {problem}" for problem in problems]
    return "\n".join(lines)


def _release_lines(releases: Mapping[str, Any] | None) -> list[str]:
    """The last activations by smartpole-release (absent from an older daemon's answer)."""
    history = (releases or {}).get("history") or []
    if not history:
        return []
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(e.get("at") or 0))),
            str(e.get("from") or "-"),
            str(e.get("version")),
            str(e.get("outcome")) + ("" if e.get("reported", True) else " (unreported)"),
            str(e.get("reason") or ""),
        ]
        for e in history
    ]
    return ["", "RELEASES", table(["AT (UTC)", "FROM", "TO", "OUTCOME", "REASON"], rows)]


def _device_row(d: Mapping[str, Any]) -> list[str]:
    counters = d["counters"]
    latency = counters.get("mean_latency_ms")
    other = counters["garbage"] + counters["wrong_unit"] + counters["wrong_function"]
    return [
        d["name"],
        d["bus"],
        str(d["address"]),
        d["profile"],
        d["state"] + (" (slow)" if d.get("slow") else ""),
        str(d["polls"]),
        str(counters["timeout"]),
        str(counters["crc_error"]),
        str(other + counters["error"]),
        str(counters["exception"]),
        format_latency(latency),
    ]


def clock() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def render_lights(lamps: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            str(lamp["lamp"]),
            f"{lamp['target']} %",
            "-" if lamp["pushed_level"] is None else f"{lamp['pushed_level']} %",
            str(lamp["source"]),
            str(lamp["reason"]),
        ]
        for lamp in lamps
    ]
    errors = [f"  - {lamp['lamp']}: {lamp['last_error']}" for lamp in lamps if lamp["last_error"]]
    out = table(["LAMP", "TARGET", "PUSHED", "SOURCE", "WHY"], rows, right=frozenset({1, 2}))
    return out + ("\nnot reaching the controller:\n" + "\n".join(errors) if errors else "")


def render_alarms(status: Mapping[str, Any]) -> str:
    active = status["active"]
    rows = [
        [
            str(alarm["alarm_id"]),
            str(alarm["severity"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(alarm["raised_at"]))),
            format_value(alarm["value"]),
            "yes" if alarm["acknowledged_at"] else "no",
            "present" if alarm["condition_present"] else "gone (latched)",
        ]
        for alarm in active
    ]
    lines = [
        table(["ALARM", "SEVERITY", "RAISED", "VALUE", "ACKED", "CONDITION"], rows)
        if rows
        else "no active alarms"
    ]
    held = status.get("held_off") or {}
    lines += [f"held off by safety: {point} (by {', '.join(ids)})" for point, ids in held.items()]
    if held:
        lines.append("reset with: smartpole diag reset ALARM  (once the condition is gone)")
    return "\n".join(lines)


def render_audit(records: Sequence[Mapping[str, Any]], audit: Mapping[str, Any]) -> str:
    """The records as JSON, then how many torn lines the read skipped, when any did."""
    text = json.dumps(list(records), indent=2, ensure_ascii=False)
    torn = audit.get("torn_lines")
    if isinstance(torn, int) and torn > 0:
        text += f"\n({torn} torn lines skipped in {audit.get('file', 'the audit log')})"
    return text
