"""The ``smartpole`` command: run the daemon, check configs, simulate devices, diagnose.

Exit codes: 0 success, 1 a runtime failure (daemon not reachable, port in use), 2 bad input
(invalid configuration or arguments), so scripts and systemd can tell them apart. Output cut
short by its reader (``smartpole diag points | head``) is a success: the reader had what it
wanted, so the command exits 0 without a traceback (not 141, the shell's code for a death by
SIGPIPE, which would fail a ``set -o pipefail`` script for reading only the first lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from smartpole.agent import diag, keys, logs, technician, version
from smartpole.agent.api import SOCKET_NAME, call
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config import advice
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.config.profile_path import profile_sources
from smartpole.agent.console import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, load_or_exit, parse_value
from smartpole.agent.core.errors import AgentError, ApiError, ConfigError, UsageError
from smartpole.agent.sim import commands as sim_commands
from smartpole.agent.technician import bundle

DEFAULT_STATE_DIR = Path("/var/lib/smartpole")
DEFAULT_RUNTIME_DIR = Path("/run/smartpole")

log = structlog.get_logger("smartpole.cli")


def _systemd_dir(variable: str) -> Path | None:
    """systemd's StateDirectory=/RuntimeDirectory= paths; the first if there are several."""
    value = os.environ.get(variable, "")
    return Path(value.split(":")[0]) if value else None


def _state_dir(args: argparse.Namespace) -> Path:
    given: Path | None = args.state_dir
    return given or _systemd_dir("STATE_DIRECTORY") or DEFAULT_STATE_DIR


def cmd_config_check(args: argparse.Namespace) -> int:
    """Errors (stderr) fail the check with exit 2; warnings (stdout, after the OK line,
    each starting ``warning:``) do not: the daemon runs with them."""
    config = load_or_exit(args.file)
    profiles = profile_sources(config.profile_files)
    found = advice.warnings(config)
    note = f", {len(found)} warning(s)" if found else ""
    print(
        f"{args.file}: OK - pole {config.pole.pole.id}, {len(config.pole.buses)} bus(es), "
        f"{len(config.pole.devices)} device(s), profiles: {profiles}{note}"
    )
    for warning in found:
        print(f"warning: {warning}")
    return EXIT_OK


def _with_bus_ports(config: LoadedConfig, overrides: Sequence[str]) -> LoadedConfig:
    """Point buses elsewhere (rigs, simulators): ``BUS=/dev/pts/3`` or ``BUS=127.0.0.1:1502``."""
    buses = dict(config.pole.buses)
    for item in overrides:
        name, sep, where = item.partition("=")
        if not sep or not where:
            raise UsageError(f"--bus-port {item!r}: expected BUS=PATH or BUS=HOST:PORT")
        if name not in buses:
            raise UsageError(f"--bus-port {item!r}: no bus {name!r} in {config.path}")
        try:
            buses[name] = buses[name].at(where)
        except ValueError as exc:
            raise UsageError(f"--bus-port {item!r}: bus {name} {exc}") from exc
    pole = config.pole.model_copy(update={"buses": buses})
    return LoadedConfig(config.path, pole, config.profiles, config.profile_files)


def cmd_run(args: argparse.Namespace) -> int:
    from smartpole.agent.daemon import Daemon, serve
    from smartpole.agent.sdnotify import Notifier

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        # One event with every problem: the journal shows why the service did not start.
        log.error("config_invalid", file=str(args.config), problems=[str(p) for p in exc.problems])
        return EXIT_BAD_INPUT
    config = _with_bus_ports(loaded, args.bus_port)
    state_dir = _state_dir(args)
    runtime_dir = args.runtime_dir or _systemd_dir("RUNTIME_DIRECTORY") or state_dir
    for folder in {state_dir, runtime_dir}:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise AgentError(f"cannot use directory {folder}: {exc.strerror or exc}") from exc
    trusted = {"trusted": lambda: True, "untrusted": lambda: False}.get(args.clock)
    with Notifier.from_environ() as notifier:
        daemon = Daemon(
            config,
            state_dir=state_dir,
            runtime_dir=runtime_dir,
            notifier=notifier,
            clock_trusted=trusted,
        )
        asyncio.run(serve(daemon))
    return EXIT_OK


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.state_dir is not None:
        return Path(args.state_dir) / SOCKET_NAME
    runtime = _systemd_dir("RUNTIME_DIRECTORY")
    return (runtime or DEFAULT_RUNTIME_DIR) / SOCKET_NAME


def _diag_params(args: argparse.Namespace) -> dict[str, object]:
    """The API request for a diag command's positional words (DEVICE POINT VALUE)."""
    if args.what == "override":
        # diag override LAMP LEVEL DURATION_S  |  diag override LAMP clear
        if not args.device or not args.point:
            raise UsageError("diag override needs LAMP and LEVEL DURATION_S, or LAMP clear")
        if args.point == "clear":
            return {"lamp": args.device, "clear": True}
        if args.value is None:
            raise UsageError("diag override needs a DURATION_S after the level")
        return {
            "lamp": args.device,
            "level": parse_value(args.point),
            "duration_s": parse_value(args.value),
        }
    if args.what == "power_cycle":
        if not args.device:
            raise UsageError("diag power_cycle needs the DEVICE")
        return {"device": args.device}
    if args.what == "reset":
        if not args.device:
            raise UsageError("diag reset needs the ALARM id (see diag alarms)")
        return {"alarm": args.device}
    return {}


def cmd_diag(args: argparse.Namespace) -> int:
    params = _diag_params(args)
    if args.what in ("read", "write"):
        if not args.device or not args.point:
            raise UsageError(f"diag {args.what} needs DEVICE and POINT")
        params = {"device": args.device, "point": args.point}
    if args.what == "write":
        if args.value is None:
            raise UsageError("diag write needs a VALUE")
        params["value"] = parse_value(args.value)
    if args.what == "ptz":
        if not args.device or not args.point or not args.point.isdigit():
            raise UsageError("diag ptz needs DEVICE and a PRESET number")
        params = {"device": args.device, "preset": int(args.point)}
    # A power cycle waits for the device's off time (up to 10 min) before it answers.
    timeout_s = 660.0 if args.what == "power_cycle" else 30.0
    result = call(_socket_path(args), args.what, timeout_s=timeout_s, **params)
    if args.what == "ptz" and not args.json:
        print(f"{args.device}: at preset {args.point}, position {result}")
        return EXIT_OK
    if args.what in ("read", "write") and not args.json:
        verb = "read" if args.what == "read" else "wrote, read back"
        unit = _unit_of(_socket_path(args), args.device, args.point)
        print(diag.render_reading(f"{args.device}.{args.point}", verb, result, unit))
        return EXIT_OK
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif args.what == "points":
        print(diag.render_points(result))
    elif args.what == "plan":
        print(diag.render_plan(result))
    elif args.what == "status":
        print(diag.render_status(result))
    elif args.what == "lights":
        print(diag.render_lights(result))
    elif args.what == "alarms":
        print(diag.render_alarms(result))
    elif args.what == "audit":
        # The read just made counted the torn lines it skipped; status says how many.
        audit = call(_socket_path(args), "status", timeout_s=timeout_s).get("audit", {})
        print(diag.render_audit(result, audit))
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return EXIT_OK


def _unit_of(socket: Path, device: str, point: str) -> str:
    """The point's unit from the point table; a read that worked is shown without one
    rather than failed when the table cannot be had."""
    try:
        sample = call(socket, "point", timeout_s=30.0, device=device, point=point)
    except ApiError:
        return ""
    return str(sample.get("unit") or "") if isinstance(sample, dict) else ""


def cmd_demo(args: argparse.Namespace) -> int:
    from smartpole.agent.demo import run_demo

    load_or_exit(args.config)  # a broken demo config is reported like any other
    return run_demo(args.config, duration_s=args.duration, refresh_s=args.refresh)


def cmd_analyze(args: argparse.Namespace) -> int:
    # The one import of the analytics in this package: analyze is an offline tool that runs
    # the camera pipeline in this process. The daemon never gets here, and keeps video in
    # worker processes.
    from smartpole.models.analyze import run

    camera, v2x, name = None, None, None
    if args.config is not None:
        loaded = load_or_exit(args.config)
        cameras = loaded.pole.cameras
        name = args.camera
        if name is None and len(cameras) == 1:
            name = next(iter(cameras))
        if name not in cameras:
            known = ", ".join(cameras) or "none"
            what = "--camera NAME is needed" if name is None else f"no camera {name!r}"
            print(f"smartpole analyze: {what} ({args.config} has: {known})", file=sys.stderr)
            return EXIT_BAD_INPUT
        camera = cameras[name].for_worker(args.config.parent)
        v2x = loaded.pole.v2x.for_worker(args.config.parent) if loaded.pole.v2x else None
    return run(
        args.video,
        line=args.line,
        model=args.model,
        classes=args.classes,
        as_json=args.json,
        camera=camera,
        v2x=v2x,
        rsm=args.rsm,
        camera_name=name or "camera",
    )


class _Version(argparse.Action):
    """``--version [CONFIG]``: acts while parsing, like argparse's own version action, so
    no command is needed."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        config = Path(values) if isinstance(values, str) else None
        print(version.version_text(config))
        parser.exit(EXIT_OK)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=logs.LEVELS, default="info")
    common.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="auto: readable on a terminal, JSON lines otherwise (systemd journal)",
    )
    parser = argparse.ArgumentParser(
        prog="smartpole", description="Control agent for a multi-function smart pole."
    )
    parser.add_argument(
        "--version",
        action=_Version,
        nargs="?",
        const=None,
        metavar="CONFIG",
        help="print the version and exit; with a pole config (default: "
        f"{version.DEFAULT_CONFIG} if present) also its hash and its profiles' hashes",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the daemon until SIGTERM")
    run.add_argument("--config", type=Path, required=True, help="pole config (YAML)")
    run.add_argument(
        "--state-dir", type=Path, help="default: $STATE_DIRECTORY or /var/lib/smartpole"
    )
    run.add_argument(
        "--runtime-dir",
        type=Path,
        help="API socket folder; default: $RUNTIME_DIRECTORY or the state dir",
    )
    run.add_argument(
        "--bus-port",
        action="append",
        default=[],
        metavar="BUS=PATH",
        help="use PATH as the serial port of BUS (test rigs, simulators); repeatable",
    )
    run.add_argument(
        "--clock",
        choices=["auto", "trusted", "untrusted"],
        default="auto",
        help="trust the wall clock for lighting programs; auto: only after time sync or with an"
        " RTC (else photocell, else 100 %%)",
    )
    run.set_defaults(handler=cmd_run)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check", parents=[common], help="validate a pole config and its profiles; exit 2 if bad"
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=cmd_config_check)
    keys.add_commands(sub, common)
    sim_commands.add_commands(sub, common)

    diag_parser = sub.add_parser("diag", parents=[common], help="ask the running daemon")
    diag_parser.add_argument(
        "what",
        choices=[
            "status",
            "points",
            "plan",
            "read",
            "write",
            "audit",
            "ptz",
            "lights",
            "override",
            "alarms",
            "reset",
            "power",
            "power_cycle",
            "mcu",
            "cameras",
            "uplink",
            "api",
        ],
    )
    diag_parser.add_argument("device", nargs="?", help="read/write: the device")
    diag_parser.add_argument("point", nargs="?", help="read/write: the point; ptz: the preset")
    diag_parser.add_argument("value", nargs="?", help="write: number, true/false or on/off")
    diag_parser.add_argument(
        "--socket", help=f"API socket; default {DEFAULT_RUNTIME_DIR / SOCKET_NAME}"
    )
    diag_parser.add_argument(
        "--state-dir", type=Path, help="the daemon's --state-dir (socket inside)"
    )
    diag_parser.add_argument("--json", action="store_true", help="machine-readable output")
    diag_parser.set_defaults(handler=cmd_diag)
    technician.add_commands(diag_parser)  # diag scan, diag readdress: on the bus directly
    bundle.add_command(  # diag bundle: the daemon's views and the machine's, for support
        diag_parser, socket=_socket_path, state_dir=_state_dir, version_text=version.version_text
    )

    demo = sub.add_parser(
        "demo", parents=[common], help="run a simulated pole and show its live points"
    )
    demo.add_argument("--config", type=Path, default=Path("configs/poles/demo.yaml"))
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--refresh", type=float, default=1.0, help="seconds between redraws")
    demo.set_defaults(handler=cmd_demo)

    analyze = sub.add_parser(
        "analyze",
        parents=[common],
        help="count road users crossing a line in a video file (the camera pipeline, offline)",
    )
    analyze.add_argument("video", help="video file")
    analyze.add_argument(
        "--line",
        metavar="X1,Y1,X2,Y2",
        help="counting line in the video's native pixels; 'in' = crossing to its right-hand"
        " side (left to right: moving down the image); with --config, replaces its lines",
    )
    analyze.add_argument(
        "--config",
        type=Path,
        metavar="POLE.yaml",
        help="use a camera's section of this pole config (lines, zones, calibration)",
    )
    analyze.add_argument("--camera", help="with --config: which camera (if it has several)")
    analyze.add_argument(
        "--rsm",
        type=Path,
        metavar="OUT.jsonl",
        help="write the camera's V2X messages (RSM, RSI) as JSON lines; needs --config",
    )
    analyze.add_argument(
        "--model",
        type=Path,
        help="YOLOX ONNX model; default: $SMARTPOLE_MODEL, else the YOLOX-nano COCO model shipped",
    )
    analyze.add_argument(
        "--classes",
        metavar="ID=NAME,...",
        help="model class ids to count; default: the COCO traffic classes",
    )
    analyze.add_argument("--json", action="store_true", help="one JSON object on stdout")
    analyze.set_defaults(handler=cmd_analyze)
    return parser


def _reader_gone() -> int:
    """stdout's reader closed the pipe (``| head``): what is still buffered can never be
    written, and Python would report that at exit; point stdout at /dev/null instead."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe is a traceback and 120
    except BrokenPipeError:
        return _reader_gone()
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        code: int = args.handler(args)
    except ApiError as exc:
        print(f"smartpole: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except UsageError as exc:
        print(f"smartpole: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except AgentError as exc:
        log.error("failed", error=str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
