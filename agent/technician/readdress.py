"""``smartpole diag readdress``: move one device to a new unit id (and baud rate).

The new unit id (and baud code) is written to the registers a profile's ``addressing``
block names; then the device must answer at the new address and no longer at the old one.
Every unit of such models ships as address 1, so each is re-addressed alone on the bus
before it joins the others. Nothing is written until the device at ``--from`` has read
back its own address from the profile's address register and the new address is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from smartpole.agent.technician.options import EXIT_OK
from smartpole.agent.technician.port import BusError, Exchange, RtuPort
from smartpole.agent.technician.probes import FALLBACK_PROBES, Probe, dedupe, first_register
from smartpole.drivers.modbus.pdu import READ_HOLDING_REGISTERS, WRITE_SINGLE_REGISTER, Request
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.modbus.profile import ModbusAddressing, ModbusProfile
from smartpole.drivers.modbus.rtu import encode_request


@dataclass
class Readdress:
    """One device moved from ``old`` to ``new`` (and optionally to ``new_baud``)."""

    line: RtuPort
    profile_name: str
    profile: ModbusProfile
    addressing: ModbusAddressing
    old: int
    new: int
    new_baud: int | None
    out: TextIO
    _step: int = 0
    _baud: int = field(init=False)  # the rate the device talks at before we change it

    def __post_init__(self) -> None:
        self._baud = self.line.baudrate

    def say(self, text: str) -> None:
        self._step += 1
        print(f"{self._step}. {text}", file=self.out, flush=True)

    def read_address(self, unit: int) -> Exchange:
        request = encode_request(
            Request(unit, READ_HOLDING_REGISTERS, self.addressing.address_register, 1)
        )
        return self.line.exchange(request)

    def run(self) -> int:
        register = f"0x{self.addressing.address_register:04X}"
        print(
            f"readdress a {self.profile_name} on {self.line.port} at {self.line.settings}: "
            f"unit {self.old} -> {self.new}"
            + (f", {self.line.baudrate} -> {self.new_baud} baud" if self._baud_changes else ""),
            file=self.out,
            flush=True,
        )
        self._check_device()
        if self.new != self.old:
            self._check_free(self.new, self.line.baudrate)
        if self._baud_changes and self.new_baud is not None:
            # Another device at the new rate would share the address once this one switches.
            self._check_free(self.new, self.new_baud)
        if self.new != self.old:
            self._write(self.old, self.addressing.address_register, self.new, "address")
            self._verify_moved(register)
        if not self._baud_changes:
            print(f"done: the {self.profile_name} answers at unit {self.new}", file=self.out)
            return EXIT_OK
        return self._change_baud()

    @property
    def _baud_changes(self) -> bool:
        return self.new_baud is not None and self.new_baud != self._baud

    def _check_device(self) -> None:
        register = f"0x{self.addressing.address_register:04X}"
        exchange = self.read_address(self.old)
        frame = exchange.answer
        if frame is None:
            hint = ""
            if self.addressing.probe_unit is not None:
                hint = (
                    "; if its address is unknown, `smartpole diag scan --profile "
                    f"{self.profile_name}` asks probe unit {self.addressing.probe_unit}"
                )
            if exchange.noise or exchange.others:
                raise BusError(
                    f"unit {self.old}: garbled answer, two devices on unit {self.old}? Connect "
                    "the new device alone, re-address it, then connect the next; nothing written"
                )
            raise BusError(
                f"no answer from unit {self.old} at {self.line.settings} within "
                f"{self.line.timeout_s:g} s; nothing written (scan for it: smartpole diag scan "
                f"--port {self.line.port}){hint}"
            )
        if frame.exception is not None:
            raise BusError(
                f"unit {self.old} answered {frame.describe_exception()} reading its address "
                f"register {register}: not a {self.profile_name}? nothing written"
            )
        value = int.from_bytes(frame.data[:2], "big")
        if value != self.old:
            raise BusError(
                f"unit {self.old} says its address register {register} holds {value}: "
                f"not a {self.profile_name}? nothing written"
            )
        self.say(f"unit {self.old} answers: address register {register} = {value}")

    def _check_free(self, unit: int, baud: int) -> None:
        """Any answer at ``unit`` (data, exception, even garbled) means it is taken."""
        old_baud = self.line.baudrate
        own = Probe(RegisterKind.HOLDING, self.addressing.address_register)
        probes = dedupe([own, first_register(self.profile), *FALLBACK_PROBES])
        self.line.set_baudrate(baud)
        try:
            for probe in probes:
                exchange = self.line.exchange(probe.request(unit))
                if exchange.answer is not None or exchange.noise:
                    how = (
                        exchange.answer.describe_exception()
                        if exchange.answer is not None and exchange.answer.exception is not None
                        else "an answer"
                        if exchange.answer is not None
                        else "garbled bytes"
                    )
                    raise BusError(
                        f"unit {unit} is already taken at {baud} baud: {how} to {probe}. "
                        f"Choose another --to (smartpole diag scan --port {self.line.port} "
                        "lists the units in use); nothing written"
                    )
        finally:
            self.line.set_baudrate(old_baud)
        self.say(
            f"unit {unit} is free at {baud} baud: no answer to " + ", ".join(str(p) for p in probes)
        )

    def _write(self, unit: int, register: int, value: int, what: str) -> None:
        request = encode_request(Request(unit, WRITE_SINGLE_REGISTER, register, 1, (value,)))
        exchange = self.line.exchange(request)
        frame = exchange.answer
        if frame is not None and frame.exception is not None:
            raise BusError(
                f"unit {unit} refused {value} in its {what} register 0x{register:04X}: "
                f"{frame.describe_exception()}"
            )
        echo = "echoed" if frame is not None else "no echo, checking whether it took"
        self.say(f"wrote {value} to {what} register 0x{register:04X} of unit {unit} ({echo})")

    def _verify_moved(self, register: str) -> None:
        for _ in range(3):  # a device may be busy writing its EEPROM for a moment
            exchange = self.read_address(self.new)
            if exchange.answer is not None:
                break
        frame = exchange.answer
        if frame is None or frame.exception is not None:
            raise BusError(
                f"no answer at the new unit {self.new}: the write did not take (some models "
                "apply it at power-up: power-cycle the device, then run diag scan)"
            )
        value = int.from_bytes(frame.data[:2], "big")
        if value != self.new:
            raise BusError(f"unit {self.new} answers, but its address register holds {value}")
        self.say(f"unit {self.new} answers: address register {register} = {value}")
        if self.read_address(self.old).heard_something:
            raise BusError(
                f"unit {self.old} still answers too: another device on {self.old}, or this "
                f"model keeps answering both until it is power-cycled"
            )
        self.say(f"unit {self.old} is silent now")

    def _change_baud(self) -> int:
        assert self.new_baud is not None
        register = self.addressing.baud_register
        assert register is not None
        code = next(c for c, rate in self.addressing.baud_codes.items() if rate == self.new_baud)
        old_baud = self.line.baudrate
        self._write(self.new, register, code, f"baud ({self.new_baud})")
        self.line.set_baudrate(self.new_baud)
        if self.read_address(self.new).answer is not None:
            self.say(f"unit {self.new} answers at {self.new_baud} baud")
            print(
                f"done: the {self.profile_name} answers at unit {self.new}, {self.new_baud} baud",
                file=self.out,
            )
            return EXIT_OK
        self.line.set_baudrate(old_baud)
        if self.read_address(self.new).answer is not None:
            self.say(
                f"unit {self.new} still answers at {old_baud} baud, not yet at {self.new_baud}"
            )
            print(
                f"pending: the {self.profile_name} takes {self.new_baud} baud when it is next "
                f"powered up; power-cycle it, then check: smartpole diag scan --port "
                f"{self.line.port} --bauds {self.new_baud} --units {self.new}",
                file=self.out,
            )
            return EXIT_OK
        raise BusError(
            f"unit {self.new} answers neither at {self.new_baud} nor at {old_baud} baud: "
            f"smartpole diag scan --port {self.line.port} looks at every rate"
        )
