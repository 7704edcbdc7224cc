"""``smartpole diag scan`` and ``diag readdress`` against ``smartpole sim`` on real ptys.

The simulated bus is configured at 115200 baud: a pty has no line speed, and the simulator
delays each answer by the wire time of its configured rate, so a fast rate keeps these
scans short. The scanner still runs its 9600-baud timing (request wire time plus timeout
per silent unit), which the budget assertions check. Every wait is on an answer, a
timeout or a process; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import tty
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import serial
import yaml

from helpers.paths import PROFILES, REPO
from helpers.processes import SMARTPOLE, Proc
from smartpole.agent.buses.registry import load_profile
from smartpole.agent.cli import build_parser
from smartpole.agent.core.errors import UsageError
from smartpole.agent.technician.options import unit_list
from smartpole.agent.technician.port import RtuPort
from smartpole.agent.technician.report import Progress
from smartpole.drivers.line import wire_time_s
from smartpole.drivers.modbus.pdu import Request
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.modbus.rtu import encode_request, split_replies
from smartpole.drivers.sim.devices import SimulatedDevice
from smartpole.drivers.sim.faults import FaultMode
from smartpole.drivers.sim.rtu_pty import RtuPtyServer

RENKE, CWT, LAMP = "renke-rs-fsjt-n01", "cwt-uwd", "lamp-controller"
POLE = {"wind": (RENKE, 1), "weather": (CWT, 7), "lamp": (LAMP, 200)}
ADDRESS_REGISTER, BAUD_REGISTER = 0x07D0, 0x07D1
SCAN_9600 = ("--bauds", "9600")


def _pole(tmp_path: Path, devices: dict[str, tuple[str, int]], *buses: str) -> Path:
    bus = {"type": "modbus-rtu", "port": "/dev/ttyUSB0", "baudrate": 115200}
    data = {
        "pole": {"id": "tech-pole"},
        "profiles_dir": str(PROFILES),
        "buses": {name: bus for name in ("rs485-1", *buses)},
        "devices": {
            name: {"profile": profile, "bus": "rs485-1", "unit_id": unit}
            for name, (profile, unit) in devices.items()
        },
    }
    path = tmp_path / "pole.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _smartpole(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SMARTPOLE, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def _scan(port: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _smartpole("diag", "scan", "--port", port, *SCAN_9600, *args)


def _found(result: subprocess.CompletedProcess[str]) -> dict[int, dict[str, Any]]:
    return {device["unit"]: device for device in json.loads(result.stdout)["devices"]}


def _diag(*argv: str) -> int:
    """``smartpole diag ...`` in this process, for what never needs a simulator."""
    args = build_parser().parse_args(["diag", *argv])
    code: int = args.handler(args)
    return code


def _budget_s(units: int, timeout_s: float) -> float:
    """What a scan of silent units may cost at 9600 baud: wire time plus timeout, + 50 %."""
    return 1.5 * units * (wire_time_s(8, 9600) + timeout_s)


def _read_register(port: str, unit: int, register: int) -> int | None:
    with RtuPort(port, baudrate=9600, timeout_s=0.5) as line:
        answer = line.exchange(encode_request(Request(unit, 3, register, 1))).answer
    return None if answer is None else int.from_bytes(answer.data, "big")


# ----- scan --------------------------------------------------------------------------------


def test_scan_finds_exactly_the_devices_on_the_bus(
    tmp_path: Path, simulator: Callable[..., Proc]
) -> None:
    config = _pole(tmp_path, POLE)
    sim = simulator(config, "--values", "vectors")
    port = sim.extra["rs485-1"]
    # No listening devices on this bus: the quiet period after a silent unit can go.
    result = _scan(port, "--timeout", "0.005", "--quiet", "0", "--json")
    assert result.returncode == 0, result.stderr
    estimate, progress = result.stderr.splitlines()  # off a terminal: and nothing else
    assert re.fullmatch(rf"scanning {port}: units 1-247 at 9600 baud, about \d\.\d s", estimate)
    assert progress.startswith("9600 baud done: 3 found, ")
    report = json.loads(result.stdout)
    found = _found(result)
    assert sorted(found) == [1, 7, 200]
    assert {d["baud"] for d in found.values()} == {9600}
    assert found[1]["values"] == [0x38]  # the anemometer's test vector: 5.6 m/s
    assert (found[7]["answer"], found[7]["exception"]) == ("exception", 2)  # no register 0
    assert found[200]["values"] == [80]  # the lamp's dim level
    assert report["requests"] >= 247
    assert report["elapsed_s"] < _budget_s(247, 0.005)

    # With a profile: its probe unit first, then its first register at every unit.
    args = ("--units", "1-10", "--timeout", "0.05", "--profile", CWT, "--config", str(config))
    result = _scan(port, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "probe unit 255 at 9600 baud: a cwt-uwd answered, its address is 7"
    rows = {int(line.split()[0]): line.split(None, 2)[2] for line in lines[2:4]}
    assert rows == {
        1: "exception 2 (illegal data address) to FC 03 holding 0x01F4",
        7: "FC 03 holding 0x01F4 = 35 (0x0023)",  # the CWT's first register, wind speed
    }
    assert re.fullmatch(r"2 devices found on .*: 11 requests in \d+\.\d s", lines[-1])


def test_scan_of_an_empty_bus_exits_1_quickly_and_late_answers_still_count(
    tmp_path: Path, simulator: Callable[..., Proc]
) -> None:
    # Devices that answer 40 ms late on one bus, nothing at all on the other.
    sim = simulator(_pole(tmp_path, {"wind": (RENKE, 1)}, "empty"), "--turnaround-ms", "40")
    empty = _scan(sim.extra["empty"], "--timeout", "0.002", "--quiet", "0")
    assert empty.returncode == 1, empty.stderr
    summary = re.search(r"no device answered on .*: 247 requests in (\d+\.\d) s", empty.stdout)
    assert summary, empty.stdout
    assert float(summary.group(1)) < _budget_s(247, 0.002)

    late = _scan(sim.extra["rs485-1"], "--units", "1-5", "--timeout", "0.005", "--json")
    assert late.returncode == 0, late.stderr
    found = _found(late)
    assert list(found) == [1]
    assert found[1]["late"], "the answer came after the timeout, while unit 2+ was asked"


def test_scan_refuses_a_port_another_master_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    daemon_like = serial.Serial()
    daemon_like.port = path
    daemon_like.exclusive = True  # as the daemon's serial clients open their bus
    daemon_like.open()
    try:
        code = _diag("scan", "--port", path, "--units", "1")
    finally:
        daemon_like.close()
        os.close(master)
        os.close(slave)
    assert code == 1
    err = capsys.readouterr().err
    assert f"smartpole: {path} is in use by another program" in err
    assert "systemctl stop smartpole" in err
    assert _diag("scan", "--port", str(tmp_path / "ttyUSB9"), "--units", "1") == 1
    assert capsys.readouterr().err == f"smartpole: no serial port {tmp_path / 'ttyUSB9'}\n"


# ----- readdress ---------------------------------------------------------------------------


def test_readdress_moves_a_renke_and_the_scan_follows(
    tmp_path: Path, simulator: Callable[..., Proc]
) -> None:
    config = _pole(tmp_path, POLE)
    sim = simulator(config, "--values", "vectors")
    port = sim.extra["rs485-1"]
    profile = ("--port", port, "--profile", RENKE, "--config", str(config), "--timeout", "0.05")

    moved = _smartpole("diag", "readdress", *profile, "--from", "1", "--to", "12")
    assert moved.returncode == 0, moved.stderr
    steps = moved.stdout.splitlines()
    assert steps[1:] == [
        "1. unit 1 answers: address register 0x07D0 = 1",
        "2. unit 12 is free at 9600 baud: no answer to FC 03 holding 0x07D0, "
        "FC 03 holding 0x0000, FC 04 input 0x0000, FC 01 coil 0x0000",
        "3. wrote 12 to address register 0x07D0 of unit 1 (echoed)",
        "4. unit 12 answers: address register 0x07D0 = 12",
        "5. unit 1 is silent now",
        "done: the renke-rs-fsjt-n01 answers at unit 12",
    ]
    scan = _scan(port, "--units", "1-20", "--timeout", "0.01", "--quiet", "0", "--json")
    found = _found(scan)
    assert sorted(found) == [7, 12]
    assert found[12]["values"] == [0x38], "unit 12 is the anemometer that moved"

    rebaud = _smartpole(
        "diag", "readdress", *profile, "--from", "12", "--to", "13", "--new-baud", "4800"
    )
    assert rebaud.returncode == 0, rebaud.stderr
    assert "unit 13 is free at 4800 baud" in rebaud.stdout
    assert "wrote 1 to baud (4800) register 0x07D1 of unit 13 (echoed)" in rebaud.stdout
    assert rebaud.stdout.splitlines()[-1] == (
        "done: the renke-rs-fsjt-n01 answers at unit 13, 4800 baud"
    )
    assert _read_register(port, 13, BAUD_REGISTER) == 1  # recorded; a pty has no speed


def test_readdress_refuses_and_writes_nothing(
    tmp_path: Path, simulator: Callable[..., Proc], capsys: pytest.CaptureFixture[str]
) -> None:
    config = _pole(tmp_path, POLE)
    sim = simulator(config, "--log-level", "debug")
    port = sim.extra["rs485-1"]
    common = ("readdress", "--port", port, "--config", str(config))

    # Refused from the arguments alone.
    with pytest.raises(UsageError, match="profile lamp-controller has no addressing block"):
        _diag(*common, "--profile", LAMP, "--from", "200", "--to", "12")
    with pytest.raises(UsageError, match="profile cwt-uwd lists no baud codes"):
        _diag(*common, "--profile", CWT, "--from", "7", "--to", "9", "--new-baud", "4800")
    for new in ("0", "248"):
        with pytest.raises(SystemExit) as exit_info:
            _diag(*common, "--profile", RENKE, "--from", "1", "--to", new)
        assert exit_info.value.code == 2
        assert f"argument --to: {new}" in capsys.readouterr().err

    # Refused after looking at the bus: the real command, exit codes and all.
    for old, new, message in (
        ("1", "7", "smartpole: unit 7 is already taken at 9600 baud"),
        ("3", "12", "smartpole: no answer from unit 3 at 9600 8N1"),
    ):
        args = ("diag", *common, "--profile", RENKE, "--from", old, "--to", new)
        result = _smartpole(*args)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(message)
        assert "nothing written" in result.stderr

    # The simulator answers in order: once these are read, every earlier request is logged.
    assert _read_register(port, 1, ADDRESS_REGISTER) == 1
    assert _read_register(port, 7, ADDRESS_REGISTER) == 7
    functions = {event["function"] for event in sim.events("sim_request")}
    assert functions, "the checks did go on the wire"
    assert not functions & {5, 6, 15, 16}, "only reads"


def test_technician_options_are_kept_apart_from_the_daemon_commands() -> None:
    parser = build_parser()
    for argv, message in (
        (["diag", "status", "--port", "/dev/ttyUSB0"], "--port applies to diag scan"),
        (["diag", "scan", "weather", "--port", "/dev/x"], "takes options only"),
        (["diag", "readdress", "--port", "/dev/x"], "needs --profile, --config, --from, --to"),
        (["diag", "scan", "--port", "/dev/x", "--to", "3"], "--to is for readdress"),
        (["diag", "scan", "--port", "/dev/x", "--profile", RENKE], "go together"),
    ):
        args = parser.parse_args(argv)
        with pytest.raises(UsageError, match=message):
            args.handler(args)
    assert unit_list("1-3,7,5-6") == [1, 2, 3, 5, 6, 7]


# ----- pieces ------------------------------------------------------------------------------


def test_progress_is_drawn_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, piped = Terminal(), io.StringIO()
    for stream in (shown, piped):
        progress = Progress(stream, total=2)
        progress.step(9600, 1, found=0)
        progress.step(9600, 2, found=1)
        progress.close()
    assert piped.getvalue() == ""
    drawn = shown.getvalue()
    assert "9600 baud  unit   2  [############################] 100%  1 found" in drawn
    assert drawn.endswith("\r\x1b[K"), "the bar is wiped before the result is printed"


# ----- the simulator's side ----------------------------------------------------------------


def _device(name: str) -> SimulatedDevice:
    profile = load_profile(PROFILES / f"{name}.yaml")
    assert isinstance(profile, ModbusProfile)
    return SimulatedDevice(profile)


class _Master:
    """A bare RTU master on the pty: sees whatever comes back, whatever its unit byte."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    async def ask(self, *request: int, wait: float = 1.0) -> bytes:
        """Send ``unit, function, address, count-or-value`` and return what came back."""
        unit, function, address, word = request
        values = (word,) if function == 6 else ()
        os.write(self._fd, encode_request(Request(unit, function, address, 1, values)))
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(self._fd, lambda: chunks.put_nowait(os.read(self._fd, 256)))
        received = b""
        try:
            deadline = loop.time() + wait
            while not split_replies(received)[0]:
                received += await asyncio.wait_for(chunks.get(), deadline - loop.time())
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(self._fd)
        return received


@asynccontextmanager
async def _bus(devices: dict[int, SimulatedDevice]) -> AsyncIterator[tuple[RtuPtyServer, _Master]]:
    banks = {unit: device.bank for unit, device in devices.items()}
    async with RtuPtyServer(banks, baudrate=115200) as server:
        master = _Master(server.path)
        try:
            yield server, master
        finally:
            master.close()


def _reply(raw: bytes) -> tuple[int, int, bytes]:
    (frame,) = split_replies(raw)[0]
    return frame.unit, frame.function | (0x80 if frame.exception else 0), frame.data


@pytest.mark.asyncio
async def test_sim_answers_the_probe_unit_and_moves_when_readdressed() -> None:
    wind, weather = _device(RENKE), _device(CWT)
    assert (wind.bank.unit_id, wind.bank.baud_code) == (1, 1)  # shipped: address 1, 4800
    async with _bus({1: wind, 7: weather}) as (server, master):
        # FF 03 07 D0 00 01: the station answers from its own unit with its address.
        assert _reply(await master.ask(0xFF, 3, ADDRESS_REGISTER, 1)) == (7, 3, b"\x00\x07")
        assert await master.ask(0xFE, 3, ADDRESS_REGISTER, 1, wait=0.1) == b""

        echo = await master.ask(1, 6, ADDRESS_REGISTER, 12)
        assert _reply(echo) == (1, 6, b"\x07\xd0\x00\x0c")  # answered from the old id
        assert server.units == [7, 12]
        assert _reply(await master.ask(12, 3, ADDRESS_REGISTER, 1)) == (12, 3, b"\x00\x0c")
        assert await master.ask(1, 3, ADDRESS_REGISTER, 1, wait=0.1) == b""

        for refused in (7, 0, 248):  # taken by the station; broadcast; reserved
            assert _reply(await master.ask(12, 6, ADDRESS_REGISTER, refused))[1:] == (0x86, b"")
        assert (server.units, wind.bank.unit_id) == ([7, 12], 12)

        assert _reply(await master.ask(12, 6, BAUD_REGISTER, 2))[1] == 6
        assert wind.bank.baud_code == 2  # recorded; the pty keeps answering as before
        assert _reply(await master.ask(12, 6, BAUD_REGISTER, 9))[1] == 0x86
        assert wind.bank.baud_code == 2


@pytest.mark.asyncio
async def test_sim_moves_a_devices_fault_with_it_and_survives_a_broadcast() -> None:
    first, second, lamp = _device(RENKE), _device(RENKE), _device(LAMP)
    async with _bus({1: first, 2: second, 200: lamp}) as (server, master):
        server.set_fault(1, FaultMode.BAD_CRC)  # the write happens, its answer is spoilt
        spoilt = await master.ask(1, 6, ADDRESS_REGISTER, 12, wait=0.1)
        assert spoilt
        assert not split_replies(spoilt)[0]
        assert server.units == [2, 12, 200]
        assert not split_replies(await master.ask(12, 3, 0, 1, wait=0.1))[0], "fault moved along"

        # Unit 0 reaches every device at once; the mapping is re-keyed after the request.
        assert await master.ask(0, 6, ADDRESS_REGISTER, 30, wait=0.1) == b""
        assert sorted(server.units) in ([2, 30, 200], [12, 30, 200])
        assert {first.bank.unit_id, second.bank.unit_id} & {30}
        assert _reply(await master.ask(200, 3, 0, 1))[1] == 3  # still serving


@pytest.mark.asyncio
async def test_two_devices_answering_one_probe_collide() -> None:
    async with _bus({3: _device(CWT), 4: _device(CWT)}) as (_, master):
        heard = await master.ask(0xFF, 3, ADDRESS_REGISTER, 1, wait=0.1)
    assert heard, "both answer"
    assert split_replies(heard)[0] == [], "at once, so nothing valid arrives"
