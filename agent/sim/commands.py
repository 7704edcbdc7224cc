"""``smartpole sim`` and ``smartpole simctl``: simulated devices for rigs and demos, and the
faults a rig sets on them while they run."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from pathlib import Path

from smartpole.agent.console import EXIT_OK, load_or_exit, parse_value
from smartpole.agent.core.errors import ApiError, UsageError


def cmd_sim(args: argparse.Namespace) -> int:
    # Imported here: the simulators are not loaded for every other command.
    from smartpole.agent.sim.serve import parse_faults, parse_max_reads, run_simulators

    if args.listen_window_ms < 0:
        raise UsageError("--listen-window-ms must be 0 or more")
    config = load_or_exit(args.config)
    faults = parse_faults(config, args.fault)
    asyncio.run(
        run_simulators(
            config,
            buses=args.bus,
            faults=faults,
            turnaround_s=args.turnaround_ms / 1000,
            step_s=args.step_s,
            seed=args.seed,
            values=args.values,
            control=args.control,
            max_reads=parse_max_reads(config, args.max_read),
            listen_window_s=args.listen_window_ms / 1000,
        )
    )
    return EXIT_OK


def cmd_simctl(args: argparse.Namespace) -> int:
    message: dict[str, object] = {"device": args.device}
    if args.mode is not None:
        message["fault"] = args.mode
    if args.set:
        message["set"] = {
            point: _reading(value) for point, _, value in (s.partition("=") for s in args.set)
        }
    if len(message) == 1:
        raise UsageError("simctl needs a fault MODE or --set POINT=VALUE")
    request = json.dumps(message).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(args.control))
            sock.sendall(request)
            reply = json.loads(sock.makefile().readline())
    except OSError as exc:
        raise ApiError(f"no simulator control socket at {args.control}: {exc}") from exc
    if not reply.get("ok"):
        raise UsageError(str(reply.get("error")))
    print(f"{args.device}: " + ", ".join(f"{k} {v}" for k, v in message.items() if k != "device"))
    return EXIT_OK


def _reading(text: str) -> object:
    """A scripted simulator reading: a number, true/false, or else text (string points)."""
    try:
        return parse_value(text)
    except UsageError:
        return text


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
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
    sim.add_argument(
        "--max-read",
        action="append",
        default=[],
        metavar="DEVICE=N",
        help="the Modbus device refuses reads of more than N registers (exception 3); repeatable",
    )
    sim.add_argument("--step-s", type=float, default=1.0, help="how often values drift")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--values",
        choices=["walk", "vectors"],
        default="walk",
        help="walk: plausible drifting values; vectors: each profile's first test vector",
    )
    sim.add_argument(
        "--listen-window-ms",
        type=float,
        default=0.0,
        help="RTU devices take the next frame within this window after a request for another "
        "unit for that unit's answer and ignore it, as libmodbus and many RS-485 devices do "
        "(default 0: off)",
    )
    sim.add_argument("--control", type=Path, help="Unix socket for faults at run time")
    sim.set_defaults(handler=cmd_sim)

    simctl = sub.add_parser("simctl", parents=[common], help="set a fault on a running sim")
    simctl.add_argument("--control", type=Path, required=True, help="the sim's --control socket")
    simctl.add_argument("device")
    simctl.add_argument(
        "mode", nargs="?", help="fault: none, no_answer, bad_crc, exception, garbage, slow"
    )
    simctl.add_argument(
        "--set", action="append", default=[], metavar="POINT=VALUE", help="script a reading"
    )
    simctl.set_defaults(handler=cmd_simctl)
