"""What a support bundle asks the running daemon, and what it reads from the state folder.

The daemon's answers come over the same local API ``smartpole diag`` uses, one ``diag``
view per member (JSON as the daemon sent it, and the table ``diag`` prints where there is
one). When the daemon does not answer ``status`` the other views are not asked (each would
wait for the same dead socket) and the manifest gives each the same reason; the state
folder's files are then what the bundle can still show: the learnt read plans, the last
audit records, the outbox's size on disk.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from smartpole.agent import diag
from smartpole.agent.api import call
from smartpole.agent.buses.modbus.learnt import FILE_NAME as LEARNT_FILE
from smartpole.agent.config.safefile import read_small_file
from smartpole.agent.core.audit import AuditLog
from smartpole.agent.core.errors import ApiError
from smartpole.agent.core.outbox import FILE_NAME as OUTBOX_FILE
from smartpole.agent.technician.bundle_host import Sink

CALL_TIMEOUT_S: Final = 15.0
#: The views asked, in this order, and the renderer of each one ``diag`` prints as a table.
VIEWS: Final[tuple[str, ...]] = (
    "status", "points", "plan", "alarms", "lights", "mcu", "cameras", "uplink", "power", "api",
)  # fmt: skip
RENDERERS: Final[dict[str, Callable[[Any], str]]] = {
    "status": diag.render_status,
    "points": diag.render_points,
    "plan": diag.render_plan,
    "alarms": diag.render_alarms,
    "lights": diag.render_lights,
}
STATE_FILE_BYTES: Final = 1 << 22  # the learnt plans of a full pole are a few KiB
#: State-folder files the bundle never copies whatever their name (only lists).
NEVER_COPIED: Final = ("secrets",)


def daemon_views(sink: Sink, socket: Path, audit_count: int) -> dict[str, Any] | None:
    """Every ``diag`` view into ``diag/``; the status answer, or None if there was none."""
    try:
        status: dict[str, Any] = call(socket, "status", timeout_s=CALL_TIMEOUT_S)
    except ApiError as exc:
        reason = str(exc)
        for view in VIEWS:
            sink.fail(f"diag {view}", reason if view == "status" else f"not asked: {reason}")
        return None
    answers: dict[str, Any] = {"status": status}
    for view in VIEWS[1:]:
        try:
            answers[view] = call(socket, view, timeout_s=CALL_TIMEOUT_S)
        except ApiError as exc:
            sink.fail(f"diag {view}", str(exc))
    try:
        answers["audit"] = call(socket, "audit", timeout_s=CALL_TIMEOUT_S, count=audit_count)
    except ApiError as exc:
        sink.fail("diag audit", str(exc))
    for view, answer in answers.items():
        sink.add(f"diag/{view}.json", answer)
        render = RENDERERS.get(view)
        if render is not None:
            try:
                sink.add(f"diag/{view}.txt", render(answer) + "\n")
            except (KeyError, TypeError, ValueError) as exc:  # an older daemon's shape
                sink.fail(f"diag {view} table", f"cannot render: {exc!r}")
    streams = (answers.get("alarms") or {}).get("outbox")
    sink.add("state/outbox.json", {"storage": status.get("outbox"), "streams": streams})
    return status


def state_files(sink: Sink, state_dir: Path, audit_count: int, *, from_daemon: bool) -> None:
    """The state folder: a listing (names, sizes, modes, times; no content), the learnt
    read plans, and, without the daemon, the audit tail read from its file."""
    listing: list[dict[str, object]] = []
    if not state_dir.is_dir():
        sink.fail(f"state folder {state_dir}", "not there (give the daemon's --state-dir)")
    try:
        for path in sorted(state_dir.rglob("*")):
            relative = path.relative_to(state_dir)
            if relative.parts[0] in NEVER_COPIED and len(relative.parts) > 1:
                continue
            info = path.lstat()
            listing.append(
                {
                    "name": str(relative),
                    "bytes": info.st_size,
                    "mode": stat.filemode(info.st_mode),
                    "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime)),
                }
            )
    except OSError as exc:
        sink.fail(f"state folder {state_dir}", exc.strerror or str(exc))
    sink.add("state/files.json", listing)
    learnt = state_dir / LEARNT_FILE
    try:
        sink.add(f"state/{LEARNT_FILE}", json.loads(read_small_file(learnt, STATE_FILE_BYTES)))
    except FileNotFoundError:
        sink.note(f"state/{LEARNT_FILE}", "no such file: no Modbus device refused a read yet")
    except (OSError, ValueError) as exc:
        sink.fail(f"state/{LEARNT_FILE}", getattr(exc, "strerror", None) or str(exc))
    if from_daemon:
        return
    outbox = [entry for entry in listing if str(entry["name"]).startswith(OUTBOX_FILE)]
    sink.add("state/outbox.json", {"storage": "daemon not running: files only", "files": outbox})
    audit = AuditLog(state_dir)
    try:
        records = audit.tail(audit_count)
    except OSError as exc:
        sink.fail(f"audit file {audit.path}", exc.strerror or str(exc))
        return
    sink.add("diag/audit.json", records)
    sink.note("diag/audit.json", f"read from {audit.path}: the daemon did not answer")
    if audit.torn_lines:
        sink.note(f"audit file {audit.path}", f"{audit.torn_lines} torn lines skipped")
