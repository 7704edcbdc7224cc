"""Running ``diag scan`` and ``diag readdress``: from parsed options to an exit code.

Checks which options go with which command, finds ``--profile`` through ``--config``,
opens the line and hands it to :func:`.scan.scan` or :class:`.readdress.Readdress`. A
:class:`.port.BusError` becomes exit 1 with its message; a
:class:`~smartpole.agent.core.errors.UsageError` goes up to the CLI, which exits 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TextIO

from smartpole.agent.buses.registry import load_config, load_profile
from smartpole.agent.config.pole import NamePattern
from smartpole.agent.config.profile_path import ProfilePath
from smartpole.agent.core.errors import ConfigError, UsageError
from smartpole.agent.technician.options import (
    DEFAULT_BAUD,
    DEFAULT_BAUDS,
    DEFAULT_QUIET_S,
    DEFAULT_TIMEOUT_S,
    EXIT_FAILURE,
    EXIT_OK,
    MAX_UNIT,
)
from smartpole.agent.technician.port import BusError, RtuPort
from smartpole.agent.technician.probes import (
    DEFAULT_PROBE,
    FALLBACK_PROBES,
    dedupe,
    first_register,
)
from smartpole.agent.technician.readdress import Readdress
from smartpole.agent.technician.report import Progress, render_estimate, render_scan
from smartpole.agent.technician.scan import estimate_s, scan
from smartpole.drivers.modbus.profile import ModbusProfile


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.device is not None:
        raise UsageError(f"diag {args.what} takes options only, not {args.device!r}")
    if args.port is None:
        raise UsageError(f"diag {args.what} needs --port (the bus's serial port)")
    try:
        if args.what == "scan":
            return _run_scan(args, out, err)
        return _run_readdress(args, out)
    except BusError as exc:
        print(f"smartpole: {exc}", file=err)
        return EXIT_FAILURE


def _run_scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    for name in ("from_unit", "to_unit", "baud", "new_baud"):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name.removesuffix('_unit').replace('_', '-')} is for readdress")
    profile = None
    if args.profile is not None or args.config is not None:
        profile = _modbus_profile(args.profile, args.config)
    probes = [first_register(profile) if profile is not None else DEFAULT_PROBE]
    if args.thorough:
        probes = dedupe([*probes, *FALLBACK_PROBES])
    bauds: list[int] = args.bauds or list(DEFAULT_BAUDS)
    units: list[int] = args.units or list(range(1, MAX_UNIT + 1))
    line = RtuPort(
        args.port,
        baudrate=bauds[0],
        parity=args.parity or "N",
        stopbits=args.stopbits or 1,
        timeout_s=args.timeout or DEFAULT_TIMEOUT_S,
    )
    quiet_s = DEFAULT_QUIET_S if args.quiet is None else args.quiet
    addressing = profile.addressing if profile is not None else None
    expected = estimate_s(
        bauds=bauds,
        units=len(units),
        probes=len(probes),
        timeout_s=line.timeout_s,
        quiet_s=quiet_s,
        probe_unit=addressing is not None and addressing.probe_unit is not None,
    )
    progress = Progress(err, len(bauds) * len(units))
    with line:
        print(render_estimate(line.port, bauds, units, expected), file=err, flush=True)
        try:
            result = scan(
                line,
                bauds=bauds,
                units=units,
                probes=probes,
                quiet_s=quiet_s,
                addressing=addressing,
                progress=progress,
            )
        finally:
            progress.close()
    if args.json:
        print(json.dumps(result.as_json(), indent=2), file=out)
    else:
        print(render_scan(result, args.profile or "device"), file=out)
    return EXIT_OK if result.found else EXIT_FAILURE


def _run_readdress(args: argparse.Namespace, out: TextIO) -> int:
    missing = [
        flag
        for flag, value in (
            ("--profile", args.profile),
            ("--config", args.config),
            ("--from", args.from_unit),
            ("--to", args.to_unit),
        )
        if value is None
    ]
    if missing:
        raise UsageError(f"diag readdress needs {', '.join(missing)}")
    for name in ("bauds", "units", "thorough", "quiet"):
        if getattr(args, name) is not None:
            raise UsageError(f"--{name} is for scan")
    profile = _modbus_profile(args.profile, args.config)
    addressing = profile.addressing
    if addressing is None:
        raise UsageError(
            f"profile {args.profile} has no addressing block: its unit id cannot be changed "
            "over the bus (set it as its manual says, e.g. with DIP switches)"
        )
    current_baud = args.baud or DEFAULT_BAUD
    if args.new_baud is not None and args.new_baud != current_baud:
        if addressing.baud_register is None or not addressing.baud_codes:
            raise UsageError(
                f"profile {args.profile} lists no baud codes: this tool cannot change its "
                "baud rate (its manual can)"
            )
        if args.new_baud not in addressing.baud_codes.values():
            known = ", ".join(str(r) for r in sorted(addressing.baud_codes.values()))
            raise UsageError(
                f"profile {args.profile} has no baud code for {args.new_baud} (it has {known})"
            )
    if args.to_unit == args.from_unit and (args.new_baud or current_baud) == current_baud:
        raise UsageError(f"--from and --to are both {args.to_unit}: nothing to change")
    line = RtuPort(
        args.port,
        baudrate=current_baud,
        parity=args.parity or "N",
        stopbits=args.stopbits or 1,
        timeout_s=args.timeout or DEFAULT_TIMEOUT_S,
    )
    with line:
        job = Readdress(
            line, args.profile, profile, addressing, args.from_unit, args.to_unit,
            args.new_baud, out,
        )  # fmt: skip
        return job.run()


def _modbus_profile(name: str | None, config_path: Path | None) -> ModbusProfile:
    """A profile by name: one the config uses, or any file in the config's profiles folder."""
    if name is None or config_path is None:
        raise UsageError("--profile and --config go together (the config names the profiles)")
    if not re.fullmatch(NamePattern, name):
        raise UsageError(f"{name!r} is not a profile name")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise UsageError(_problems(config_path, exc)) from exc
    profile = config.profiles.get(name)
    if profile is None:
        search = ProfilePath.of(config.pole.profiles_dir, config.path)
        file = search.find(name)
        if file is None or not file.is_file():
            known = ", ".join(search.known()) or "none"
            raise UsageError(f"no profile {name!r} in {search.describe()} (profiles: {known})")
        try:
            profile = load_profile(file)
        except ConfigError as exc:
            raise UsageError(_problems(file, exc)) from exc
    if not isinstance(profile, ModbusProfile):
        raise UsageError(f"profile {name} speaks {profile.protocol}, not Modbus")
    return profile


def _problems(path: Path, exc: ConfigError) -> str:
    return "\n".join([*(str(p) for p in exc.problems), f"{path}: {exc}"])
