"""A Modbus device we did not write: ``tests/devices/libmodbus_device.c``, built on libmodbus.

Our simulators frame with our own codec, so they share every misreading of the protocol with
the client under test. This device is built once per session with the system's libmodbus
(``libmodbus-dev``, installed by ``scripts/setup-system.sh``) into ``.venv/build`` and run as
a subprocess over loopback TCP or over RTU on a pty the test owns, with the quirks real
devices have (see the C file's header for every option).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import struct
import subprocess
import termios
import tty
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Literal, NamedTuple

from helpers.paths import REPO

SOURCE = REPO / "tests" / "devices" / "libmodbus_device.c"
BUILD_DIR = REPO / ".venv" / "build"

Transport = Literal["tcp", "rtu"]


@cache
def build() -> Path:
    """Compile the device once per session (and again only when its source changes)."""
    source = SOURCE.read_bytes()
    binary = BUILD_DIR / f"libmodbus_device-{hashlib.sha256(source).hexdigest()[:12]}"
    if binary.exists():
        return binary
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libmodbus"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert flags.returncode == 0, (
        f"libmodbus not found ({flags.stderr.strip()}); run `make setup` (scripts/setup-system.sh)"
    )
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    command = ["cc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-Wconversion"]
    compiled = subprocess.run(
        [*command, "-o", str(partial), str(SOURCE), *shlex.split(flags.stdout)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compiled.returncode == 0, f"building the libmodbus device failed:\n{compiled.stderr}"
    partial.replace(binary)  # atomic: a parallel session never runs a half-written file
    return binary


def f32_words(value: float) -> list[int]:
    """An IEEE 754 float32, high word and high byte first, as two registers."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def as_f32(value: float) -> float:
    """``value`` as a float32 holds it: what a client decoding ``f32_words`` must get."""
    decoded: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return decoded


class Request(NamedTuple):
    """One request the device received, and how it answered (``ok``, ``exception-N``, or
    ``silent``: not at all)."""

    unit: int
    function: int
    address: int
    count: int
    result: str


@dataclass(frozen=True)
class DeviceConfig:
    """What the device holds and which quirks it has. Unlisted registers are holes
    (exception 2)."""

    unit: int = 1
    input: dict[int, list[int]] = field(default_factory=dict)
    holding: dict[int, list[int]] = field(default_factory=dict)
    max_count: int | None = None  # larger reads get exception 3
    silent_above: int | None = None  # larger reads get no answer at all
    delay_ms: int = 0  # turnaround before every answer
    reply_unit: int | None = None  # answer with this unit id instead of the one asked
    exception: int | None = None  # answer every request with this exception code
    drop_every: int = 0  # ignore every Nth request (0: answer all)
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"

    def args(self) -> list[str]:
        args = ["--unit", str(self.unit), "--baud", str(self.baudrate), "--parity", self.parity]
        for flag, table in (("--input", self.input), ("--holding", self.holding)):
            for address, words in table.items():
                args += [flag, f"{address}=" + ",".join(str(w) for w in words)]
        if self.max_count is not None:
            args += ["--max-count", str(self.max_count)]
        if self.silent_above is not None:
            args += ["--silent-above", str(self.silent_above)]
        if self.delay_ms:
            args += ["--delay-ms", str(self.delay_ms)]
        if self.reply_unit is not None:
            args += ["--reply-unit", str(self.reply_unit)]
        if self.exception is not None:
            args += ["--exception", str(self.exception)]
        if self.drop_every:
            args += ["--drop-every", str(self.drop_every)]
        return args


class LibmodbusDevice:
    """A libmodbus device process on one endpoint, which outlives the process: a test can
    kill or hang the device and start it again where the client still looks for it.

    Over RTU the test owns the pty: the device gets the master (``--rtu-fd``), the client
    opens ``path``, and the test keeps the slave open so the line stays up while no client
    or no device holds it.
    """

    def __init__(self, config: DeviceConfig, transport: Transport, workdir: Path) -> None:
        self.config = config
        self.transport = transport
        self.log_path = workdir / f"libmodbus-{transport}-unit{config.unit}.requests"
        self.stderr_path = self.log_path.with_suffix(".stderr")
        self.port = 0
        self.path = ""
        self._process: subprocess.Popen[str] | None = None
        self._master = self._slave = -1
        if transport == "rtu":
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            self.path = os.ttyname(self._slave)

    def bus(self, **settings: object) -> dict[str, object]:
        """The ``buses:`` entry pointing a smartpole Modbus bus at this device."""
        if self.transport == "tcp":
            return {"type": "modbus-tcp", "host": "127.0.0.1", "port": self.port, **settings}
        return {
            "type": "modbus-rtu",
            "port": self.path,
            "baudrate": self.config.baudrate,
            "parity": self.config.parity,
            **settings,
        }

    @property
    def line_fd(self) -> int:
        """RTU: the test's end of the device's pty (what the device sends is read here, what
        is written here reaches the device), for joining it to a shared line
        (``helpers.rs485``) instead of letting a client open ``path``."""
        assert self._slave >= 0, "RTU only"
        return self._slave

    def start(self) -> None:
        """Start the process (again) and return once it serves: it prints a ready line."""
        assert self._process is None or self._process.poll() is not None, "already running"
        if self.transport == "tcp":
            where = ["--tcp", str(self.port)]  # 0 the first time: any free port
            keep: tuple[int, ...] = ()
        else:
            termios.tcflush(self._master, termios.TCIOFLUSH)  # what came while it was dead
            where = ["--rtu-fd", str(self._master)]
            keep = (self._master,)
        with self.stderr_path.open("a") as stderr:
            self._process = subprocess.Popen(
                [str(build()), *where, *self.config.args(), "--log", str(self.log_path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                pass_fds=keep,
            )
        assert self._process.stdout is not None
        ready = self._process.stdout.readline().split()
        assert ready[:2] == ["ready", self.transport], (
            f"the libmodbus device did not start: {ready} {self.stderr_path.read_text()}"
        )
        if self.transport == "tcp":
            self.port = int(ready[2])

    def kill(self) -> None:
        """The device dies (power cut): no answers, over TCP no listener either."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()

    def hang(self, hung: bool = True) -> None:
        """Freeze the device (SIGSTOP) or let it go on (SIGCONT) with what queued up."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP if hung else signal.SIGCONT)

    def requests(self) -> list[Request]:
        """Every request the device received so far, in order."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            unit, function, address, count, result = line.split()
            out.append(Request(int(unit), int(function), int(address), int(count), result))
        return out

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a hung one must be able to die
        self.kill()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> LibmodbusDevice:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
