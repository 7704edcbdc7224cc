"""The ``smartpole`` command: run the daemon, check configs, simulate devices, diagnose.

Exit codes: 0 success, 1 a runtime failure (daemon not reachable, port in use), 2 bad input
(invalid configuration or arguments), so scripts and systemd can tell them apart.
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

from smartpole.agent import logs
from smartpole.agent.api import SOCKET_NAME, call
from smartpole.agent.config.loader import LoadedConfig, load_config
from smartpole.agent.errors import AgentError, ApiError, ConfigError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
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


def _load(path: Path) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from exc


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load(args.file)
    profiles = ", ".join(sorted(config.profiles))
    print(
        f"{args.file}: OK - pole {config.pole.pole.id}, {len(config.pole.buses)} bus(es), "
        f"{len(config.pole.devices)} device(s), profiles: {profiles}"
    )
    return EXIT_OK


def _with_bus_ports(config: LoadedConfig, overrides: Sequence[str]) -> LoadedConfig:
    buses = dict(config.pole.buses)
    for item in overrides:
        name, sep, port = item.partition("=")
        if not sep or not port:
            raise UsageError(f"--bus-port {item!r}: expected BUS=PATH")
        if name not in buses:
            raise UsageError(f"--bus-port {item!r}: no bus {name!r} in {config.path}")
        buses[name] = buses[name].model_copy(update={"port": port})
    pole = config.pole.model_copy(update={"buses": buses})
    return LoadedConfig(config.path, pole, config.profiles)


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
    with Notifier.from_environ() as notifier:
        daemon = Daemon(config, state_dir=state_dir, runtime_dir=runtime_dir, notifier=notifier)
        asyncio.run(serve(daemon))
    return EXIT_OK


def cmd_sim(args: argparse.Namespace) -> int:
    from smartpole.agent.simulate import parse_faults, run_simulators

    config = _load(args.config)
    faults = parse_faults(config, args.fault)
    asyncio.run(
        run_simulators(
            config,
            buses=args.bus,
            faults=faults,
            turnaround_s=args.turnaround_ms / 1000,
            step_s=args.step_s,
            seed=args.seed,
        )
    )
    return EXIT_OK


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.state_dir is not None:
        return Path(args.state_dir) / SOCKET_NAME
    runtime = _systemd_dir("RUNTIME_DIRECTORY")
    return (runtime or DEFAULT_RUNTIME_DIR) / SOCKET_NAME


def cmd_diag(args: argparse.Namespace) -> int:
    from smartpole.agent import diag

    result = call(_socket_path(args), args.what)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif args.what == "points":
        print(diag.render_points(result))
    elif args.what == "status":
        print(diag.render_status(result))
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from smartpole.agent.demo import run_demo

    _load(args.config)  # a broken demo config is reported like any other
    return run_demo(args.config, duration_s=args.duration, refresh_s=args.refresh)


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
    run.set_defaults(handler=cmd_run)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check", parents=[common], help="validate a pole config and its profiles; exit 2 if bad"
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=cmd_config_check)

    sim = sub.add_parser(
        "sim", parents=[common], help="simulate a pole's devices on pseudo-terminals"
    )
    sim.add_argument(
        "--config", type=Path, required=True, help="pole config whose devices to simulate"
    )
    sim.add_argument("--bus", action="append", default=[], help="only this bus; repeatable")
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="DEVICE=MODE",
        help="inject a fault: no_answer, bad_crc, exception, garbage, slow; repeatable",
    )
    sim.add_argument("--turnaround-ms", type=float, default=5.0, help="device reply delay")
    sim.add_argument("--step-s", type=float, default=1.0, help="how often values drift")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(handler=cmd_sim)

    diag = sub.add_parser("diag", parents=[common], help="ask the running daemon")
    diag.add_argument("what", choices=["status", "points", "plan"])
    diag.add_argument("--socket", help=f"API socket; default {DEFAULT_RUNTIME_DIR / SOCKET_NAME}")
    diag.add_argument("--state-dir", type=Path, help="the daemon's --state-dir (socket inside)")
    diag.add_argument("--json", action="store_true", help="machine-readable output")
    diag.set_defaults(handler=cmd_diag)

    demo = sub.add_parser(
        "demo", parents=[common], help="run a simulated pole and show its live points"
    )
    demo.add_argument("--config", type=Path, default=Path("configs/poles/demo.yaml"))
    demo.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--refresh", type=float, default=1.0, help="seconds between redraws")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
