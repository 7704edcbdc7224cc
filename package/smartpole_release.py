#!/usr/bin/python3.11
"""smartpole-release: install a release beside the running one, switch, and roll back.

It runs with the system's Python 3.11 and the standard library only, outside every venv,
so it still works when the release it is switching to is broken. Every step of a switch is
written to a journal first (``release-switch.json``, fsynced), so ``recover`` can undo a
switch killed between any two steps and the previous release ends running again.

Test rig hook: ``SMARTPOLE_RELEASE_CRASH_AFTER=<step>`` makes the tool die (``os._exit``)
right after that step (see ``STEPS``), the way a power cut or ``kill -9`` would.

Shipped as ``<release>/smartpole-release`` with ``smartpole_release_base.py`` beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from smartpole_release_base import (
    SCHEMA,
    SERVICE,
    VENV_PARTS,
    History,
    Identity,
    Layout,
    ReleaseError,
    Service,
    complete,
    config_check,
    crash_point,
    fsync_dir,
    link_target,
    read_json,
    set_link,
    write_atomic,
)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """One switcher at a time (apt and a technician could race)."""
    layout.rundir.mkdir(parents=True, exist_ok=True)
    with (layout.rundir / "lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def prepare(layout: Layout, version: str) -> None:
    rel = layout.release(version)
    if complete(layout, version):
        return
    if not rel.is_dir():
        raise ReleaseError(f"{rel} does not exist (is the package for {version} unpacked?)")
    remove_venv(rel)  # whatever a killed or failed build left is rebuilt, never run
    python = os.environ.get("SMARTPOLE_RELEASE_PYTHON", sys.executable)
    venv_python = str(rel / "bin" / "python")
    pip = [venv_python, "-m", "pip", "install", "--no-index", "--quiet", "--no-cache-dir"]
    steps = [
        # Without pip first, then ensurepip ourselves: venv hides ensurepip's output, and
        # that output is where a full disk says so.
        [python, "-m", "venv", "--without-pip", str(rel)],
        [venv_python, "-m", "ensurepip", "--default-pip"],
        [*pip, "--find-links", str(rel / "wheelhouse"), f"smartpole=={version}"],
        [str(rel / "bin" / "smartpole"), "--version"],
    ]
    try:
        for argv in steps:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
            if proc.returncode != 0:
                out = (proc.stderr + proc.stdout).strip()
                if "No space left on device" in out or "[Errno 28]" in out:
                    raise OSError(errno.ENOSPC, "No space left on device")
                last = out.splitlines()[-1] if out else f"exit status {proc.returncode}"
                raise ReleaseError(f"building release {version} failed: {last}")
        marker = rel / ".complete"
        with marker.open("w") as f:
            f.write(f"{version}\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(rel)
    except OSError as exc:
        remove_venv(rel)
        if exc.errno == errno.ENOSPC:
            raise ReleaseError(
                f"disk full while building release {version} in {rel}; "
                "the running release is untouched; free space and retry"
            ) from exc
        raise ReleaseError(f"building release {version} failed: {exc}") from exc
    except BaseException:
        remove_venv(rel)
        raise


def remove_venv(rel: Path) -> None:
    """Drop the venv parts; the package's own files (wheelhouse, the tool) stay."""
    for part in VENV_PARTS:
        path = rel / part
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


class Switcher:
    """activate / rollback / recover: the journalled switch of ``current``."""

    def __init__(self, layout: Layout, timeout: float) -> None:
        self.layout = layout
        self.ident = Identity(layout)
        self.service = Service(layout, self.ident, timeout)
        self.history = History(layout)

    def _journal(self, step: str, entry: dict[str, Any]) -> None:
        entry["step"] = step
        write_atomic(self.layout.journal, {"version": SCHEMA, **entry})
        if step == "journal":
            crash_point("journal")

    def activate(self, version: str, *, why: str = "activate") -> str:
        layout = self.layout
        if layout.journal.exists():
            self.recover()
        if not complete(layout, version):
            reason = f"release {version} is not complete; run: smartpole-release prepare {version}"
            self.history.record(version, link_target(layout.current), "refused", reason)
            raise ReleaseError(reason)
        old = link_target(layout.current)
        if old is not None and not complete(layout, old):
            old = None  # nothing worth switching back to
        problem = config_check(layout, version, self.ident)
        if (
            problem is not None
            and old not in {None, version}
            and config_check(layout, str(old), self.ident) is None
        ):
            # The old release accepts this pole file and the new one does not: stay.
            reason = f"config check fails under {version}: {problem}"
            self.history.record(version, old, "refused", reason)
            raise ReleaseError(f"{reason}; release {old} stays")
        entry: dict[str, Any] = {
            "op": why,
            "target": version,
            "old": old,
            "old_previous": link_target(layout.previous),
            "old_running": self.service.running(),
        }
        self._journal("journal", entry)
        if old is not None and old != version:
            self._journal("previous", entry)
            set_link(layout.previous, old)
            crash_point("previous")
        self._journal("current", entry)
        set_link(layout.current, version)
        crash_point("current")
        if problem is not None:
            layout.journal.unlink()
            print(
                f"release {version} installed but not started: {problem}\n"
                f"fill in {layout.config}, check it with `smartpole config check`, then start "
                f"the service (systemctl start {SERVICE})",
                file=sys.stderr,
            )
            return "installed"
        self._journal("stop", entry)
        self.service.stop()
        crash_point("stop")
        self._journal("start", entry)
        failure = self.service.start()
        crash_point("ready")
        if failure is None:
            self.history.record(version, old, "running", None)
            layout.journal.unlink()
            fsync_dir(layout.state)
            return "running"
        self._undo(entry, f"release {version}: {failure}")
        raise ReleaseError(f"release {version} failed ({failure}); back on {old}")

    def _undo(self, entry: dict[str, Any], reason: str) -> None:
        """Switch back to what ran before and restart it; record why.

        Idempotent, so a kill in the middle of it is undone by the next ``recover``. On a
        first install (nothing before) ``current`` stays: there is nothing to go back to.
        """
        self._journal("rollback", entry)
        crash_point("rollback")
        old, target, step = entry["old"], entry["target"], entry.get("step")
        back = old is not None and old != target
        # Killed before the stop: the daemon still running is the old release's, so it is
        # left alone (systemd may have restarted it on the new link meanwhile: restart).
        early = step in {"journal", "previous", "current"} and not self.layout.systemd
        keep_old_running = back and early and self.service.running()
        if not keep_old_running:
            self.service.stop()
        if back:
            set_link(self.layout.current, old)
            set_link(self.layout.previous, entry["old_previous"])
        self.history.record(target, old, "rolled_back" if back else "failed", reason)
        if back and not keep_old_running:
            failure = self.service.start()
            if failure is not None:
                self.layout.journal.unlink()
                raise ReleaseError(f"{reason}; and the previous release {old} too: {failure}")
        self.layout.journal.unlink()
        fsync_dir(self.layout.state)

    def recover(self) -> str:
        data = read_json(self.layout.journal)
        if data is None:
            return "nothing to recover"
        step = data.get("step")
        self._undo(data, f"switch to {data.get('target')} interrupted at step {step}; undone")
        return f"undid the switch to {data.get('target')} (interrupted at step {step})"

    def rollback(self) -> str:
        prev = link_target(self.layout.previous)
        if prev is None or not complete(self.layout, prev):
            raise ReleaseError("no complete previous release to roll back to")
        return self.activate(prev, why="rollback")


def remove(layout: Layout) -> None:
    """Stop the daemon, then delete every release folder and the links (package removal)."""
    Service(layout, Identity(layout, required=False), 0).stop()  # stop only: no identity
    if layout.opt.is_dir():
        set_link(layout.current, None)
        set_link(layout.previous, None)
    shutil.rmtree(layout.releases, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        layout.journal.unlink()
    shutil.rmtree(layout.rundir, ignore_errors=True)
    with contextlib.suppress(OSError):
        layout.opt.rmdir()


def status(layout: Layout, as_json: bool) -> str:
    history = History(layout).entries()
    info: dict[str, Any] = {
        "current": link_target(layout.current),
        "previous": link_target(layout.previous),
        "switch_in_progress": read_json(layout.journal),
        "history": history,
    }
    if as_json:
        return json.dumps(info, indent=1)
    lines = [f"current: {info['current']}", f"previous: {info['previous']}"]
    if info["switch_in_progress"]:
        lines.append("an interrupted switch is pending: run smartpole-release recover")
    for e in history:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("at", 0)))
        lines.append(f"{when} {e.get('from')} -> {e.get('version')}: {e.get('outcome')}")
        if e.get("reason"):
            lines.append(f"    {e['reason']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    # --root and --timeout go before or after the command (`activate V --timeout 60`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help="prefix of paths")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="READY wait, s")
    parser = argparse.ArgumentParser(
        prog="smartpole-release", description=__doc__, parents=[common]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "activate"):
        sub.add_parser(name, parents=[common]).add_argument("version")
    for name in ("recover", "rollback", "remove"):
        sub.add_parser(name, parents=[common])
    sub.add_parser("status", parents=[common]).add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.root = getattr(args, "root", Path("/"))
    if not hasattr(args, "timeout"):
        try:  # maintainer scripts take no options: a test rig sets the default here
            args.timeout = float(os.environ.get("SMARTPOLE_RELEASE_TIMEOUT", "120"))
        except ValueError:
            parser.error("SMARTPOLE_RELEASE_TIMEOUT must be a number of seconds")
    layout = Layout(args.root.resolve())
    try:
        if args.cmd == "status":
            print(status(layout, args.json))
            return 0
        with locked(layout):
            if args.cmd == "prepare":
                try:
                    prepare(layout, args.version)
                except ReleaseError as exc:
                    current = link_target(layout.current)
                    History(layout).record(args.version, current, "refused", str(exc))
                    raise
                print(f"release {args.version} is complete")
            elif args.cmd == "remove":
                remove(layout)
            else:
                sw = Switcher(layout, args.timeout)
                if args.cmd == "activate":
                    print(f"release {args.version}: {sw.activate(args.version)}")
                else:
                    print(sw.recover() if args.cmd == "recover" else sw.rollback())
    except ReleaseError as exc:
        print(f"smartpole-release: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"smartpole-release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
