"""``smartpole diag scan`` and ``diag readdress``: a technician's tools on the bus itself.

They speak Modbus RTU straight to a serial port, not through the daemon, so they are run in
the cabinet with the daemon stopped (``systemctl stop smartpole``): two masters on one
RS-485 pair garble each other. The port is opened with the exclusive lock the daemon's
serial clients take too, so a port in use is refused, never shared.

This package's front is :func:`add_commands`, which ``smartpole.agent.cli`` calls to add
both commands to its ``diag`` parser. The work is split by job:

- :mod:`.options`: what the command line accepts, its defaults and exit codes;
- :mod:`.commands`: from parsed options to an exit code;
- :mod:`.probes`: the reads that probe for devices;
- :mod:`.port`: the exclusively opened port, one request and its answer at a time;
- :mod:`.scan`: which units answer, at which baud rates;
- :mod:`.report`: the scan's progress bar and its table;
- :mod:`.readdress`: moving one device to a new unit id and baud rate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from smartpole.agent.technician.commands import run
from smartpole.agent.technician.diag_commands import add_diag_commands
from smartpole.agent.technician.options import (
    COMMANDS,
    DEFAULT_BAUD,
    DEFAULT_BAUDS,
    DEFAULT_QUIET_S,
    DEFAULT_TIMEOUT_S,
    OPTIONS,
    PARITIES,
    baud_list,
    baudrate,
    quiet,
    timeout,
    unit_id,
    unit_list,
)
from smartpole.drivers.serial_port import STOPBITS

__all__ = ["add_commands"]


def add_commands(diag: argparse.ArgumentParser) -> None:
    """Add ``scan`` and ``readdress`` to the ``diag`` parser, after its handler is set."""
    group = add_diag_commands(
        diag,
        COMMANDS,
        options=OPTIONS,
        run=run,
        title="scan and readdress",
        description="talk to a Modbus RTU bus directly, without the daemon: stop it first "
        "(systemctl stop smartpole)",
    )
    group.add_argument("--port", help="serial port of the bus, e.g. /dev/ttyUSB0")
    group.add_argument(
        "--bauds",
        type=baud_list,
        metavar="B,B",
        help=f"scan: baud rates to try (default {','.join(map(str, DEFAULT_BAUDS))})",
    )
    group.add_argument(
        "--units", type=unit_list, metavar="RANGES", help="scan: unit ids, e.g. 1-247 or 1,7,200"
    )
    group.add_argument("--parity", choices=PARITIES, help="default N")
    group.add_argument("--stopbits", type=int, choices=sorted(STOPBITS), help="default 1")
    group.add_argument(
        "--timeout",
        type=timeout,
        metavar="S",
        help=f"seconds to wait for an answer after a request (default {DEFAULT_TIMEOUT_S})",
    )
    group.add_argument(
        "--quiet",
        type=quiet,
        metavar="S",
        help=(
            "scan: seconds of silence after a request nobody answered, before the next "
            f"(default {DEFAULT_QUIET_S}): devices that listen to the line, libmodbus ones "
            "too, miss a request that comes sooner; 0 only on a bus without such devices"
        ),
    )
    group.add_argument(
        "--thorough",
        action="store_true",
        default=None,
        help="scan: also try FC 03 0, FC 04 0, FC 01 0 on silent units (about 3x longer)",
    )
    group.add_argument("--profile", help="device profile name (needs --config)")
    group.add_argument(
        "--config", type=Path, help="pole config whose profiles folder holds --profile"
    )
    group.add_argument(
        "--from", dest="from_unit", type=unit_id, metavar="UNIT", help="readdress: current unit"
    )
    group.add_argument(
        "--to", dest="to_unit", type=unit_id, metavar="UNIT", help="readdress: new unit 1..247"
    )
    group.add_argument(
        "--baud", type=baudrate, help=f"readdress: the device's baud rate now ({DEFAULT_BAUD})"
    )
    group.add_argument(
        "--new-baud", type=baudrate, metavar="B", help="readdress: also switch it to this rate"
    )
