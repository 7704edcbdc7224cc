"""Simulated devices: every shipped profile is served whole, and a master's writes stick.

Reads and writes go through the device logic (``handle_request``) the simulators run, with
registers produced by the same codec the agent uses, so these tests walk the agent's path:
plan the reads, encode the writes, decode the answers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.paths import PROFILES
from smartpole.agent.buses.registry import load_profile
from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.codec import WriteRequest
from smartpole.drivers.modbus.pdu import READ_FUNCTION, ExceptionCode, Request, RequestRefusedError
from smartpole.drivers.modbus.plan import plan_reads
from smartpole.drivers.modbus.points import DataType, RegisterKind
from smartpole.drivers.modbus.profile import ModbusProfile
from smartpole.drivers.schema import Value
from smartpole.drivers.sim.devices import SimulatedDevice
from smartpole.drivers.sim.modbus_bank import RegisterBank, handle_request

UNIT = 7
MODBUS_FILES = [
    path
    for path in sorted(PROFILES.glob("*.yaml"))
    if isinstance(load_profile(path), ModbusProfile)
]


def _profile(path: Path) -> ModbusProfile:
    profile = load_profile(path)
    assert isinstance(profile, ModbusProfile)
    return profile


def _inline(points: dict[str, object], **sections: object) -> ModbusProfile:
    data = {"protocol": "modbus", "model": "X", "manufacturer": "Y", "points": points}
    profile = ModbusProfile.model_validate({**data, **sections})
    assert profile.cross_check() == []
    return profile


@pytest.fixture(params=MODBUS_FILES, ids=[p.stem for p in MODBUS_FILES])
def profile(request: pytest.FixtureRequest) -> ModbusProfile:
    path: Path = request.param
    return _profile(path)


# --- a master on the wire ---------------------------------------------------------------


def _answer(bank: RegisterBank, req: Request) -> bytes:
    frame = handle_request({UNIT: bank}, req)
    assert frame is not None
    return frame[1:-2]  # the PDU: function code onwards, without unit and CRC


def read(bank: RegisterBank, kind: RegisterKind, address: int, count: int) -> list[int]:
    """What a master reads; fails the test on an exception answer."""
    pdu = _answer(bank, Request(UNIT, READ_FUNCTION[kind], address, count))
    assert pdu[0] == READ_FUNCTION[kind], f"exception {pdu[1:]!r} reading {kind} {address}+{count}"
    data = pdu[2:]
    if kind.is_bit:
        return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def write(bank: RegisterBank, request: WriteRequest) -> bytes:
    """Send what ``codec.encode_write`` asked for; returns the answer PDU."""
    kind, address, words = request
    if request.function == 5:
        values: tuple[int, ...] = (0xFF00 if words[0] else 0x0000,)
    else:
        values = tuple(words)
    assert kind in (RegisterKind.COIL, RegisterKind.HOLDING)
    return _answer(bank, Request(UNIT, request.function, address, len(values), values))


def read_point(sim: SimulatedDevice, name: str) -> Value:
    spec = sim.profile.points[name]
    return codec.decode(spec, read(sim.bank, spec.kind, spec.address, spec.register_count))


def _close(actual: Value, expected: Value) -> bool:
    if isinstance(expected, bool | str) or isinstance(actual, bool | str):
        return actual == expected
    return math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9)


# --- every profile is served ------------------------------------------------------------


def test_every_planned_read_is_answered_with_the_simulated_values(
    profile: ModbusProfile,
) -> None:
    sim = SimulatedDevice(profile, seed=1)
    for block in plan_reads(profile.points, profile.limits):
        words = read(sim.bank, block.kind, block.address, block.count)
        for name in block.points:
            spec = profile.points[name]
            offset = spec.address - block.address
            value = codec.decode(spec, words[offset : offset + spec.register_count])
            simulated = profile.simulation[name]
            expected: Value
            if simulated.text is not None:
                expected = simulated.text
            else:
                assert simulated.start is not None
                expected = bool(simulated.start) if spec.is_bool else simulated.start
            assert _close(value, expected), f"{name}: {value!r} != {expected!r}"
            assert sim.value(name) == value


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 1000), st.integers(1, 30))
def test_walk_stays_in_bounds_for_every_profile(seed: int, steps: int) -> None:
    for path in MODBUS_FILES:
        profile = _profile(path)
        sim = SimulatedDevice(profile, seed=seed)
        for _ in range(steps):
            sim.step()
        for name, simulated in profile.simulation.items():
            value = sim.values[name]
            spec = profile.points[name]
            if simulated.text is not None:
                assert value == simulated.text
            elif spec.is_bool:
                assert isinstance(value, bool)
                assert simulated.low <= value <= simulated.high
            else:
                assert isinstance(value, int | float)
                tolerance = 1e-6 * max(1.0, abs(simulated.high))
                assert simulated.low - tolerance <= value <= simulated.high + tolerance, name


# --- writes stick -----------------------------------------------------------------------


def _a_writable_value(sim: SimulatedDevice, name: str) -> Value:
    """A value other than the current one, inside the point's write limits."""
    spec = sim.profile.points[name]
    current = sim.value(name)
    if spec.is_bool:
        return not current
    if spec.type is DataType.STRING:
        return "ZZ"
    assert spec.write_min is not None
    assert spec.write_max is not None
    middle = round((spec.write_min + spec.write_max) / 2)
    return middle if middle != current else spec.write_min


def test_every_rw_point_reads_back_what_the_agent_writes(profile: ModbusProfile) -> None:
    sim = SimulatedDevice(profile)
    for name, spec in profile.points.items():
        if spec.access != "rw":
            continue
        value = _a_writable_value(sim, name)
        current = read(sim.bank, spec.kind, spec.address, spec.register_count)
        request = codec.encode_write(spec, value, current=current)
        answer = write(sim.bank, request)
        assert answer[0] == request.function, f"{name}: exception {answer!r}"
        assert _close(read_point(sim, name), value), name
        sim.step()
        assert _close(read_point(sim, name), value), f"{name}: the walk overwrote a write"


def test_lamp_controller_writes_through_the_bank() -> None:
    sim = SimulatedDevice(_profile(PROFILES / "lamp-controller.yaml"))
    sim.bank.write(RegisterKind.HOLDING, 0x0000, [35])
    assert sim.value("dim_level") == 35
    sim.bank.write(RegisterKind.HOLDING, 0x0001, [60, 120])  # FC 16 over two registers
    assert (sim.value("fallback_level"), sim.value("lease_timeout")) == (60, 120)
    sim.bank.write(RegisterKind.COIL, 0x0000, [0])
    assert sim.value("lamp_on") is False
    assert read(sim.bank, RegisterKind.COIL, 0, 1) == [0]
    with pytest.raises(RequestRefusedError):
        sim.bank.write(RegisterKind.INPUT, 0x0000, [0])


def test_a_write_is_where_the_walk_goes_on_from() -> None:
    profile = _inline(
        {"level": {"address": 0, "access": "rw", "write_min": 0, "write_max": 1000}},
        simulation={"level": {"start": 100, "step": 2, "min": 0, "max": 1000}},
    )
    sim = SimulatedDevice(profile, seed=3)
    sim.bank.write(RegisterKind.HOLDING, 0, [700])
    for _ in range(5):
        sim.step()
    assert 690 <= int(sim.value("level")) <= 710


# --- write blocks: the relay module and values written elsewhere --------------------------


@pytest.fixture
def relays() -> SimulatedDevice:
    return SimulatedDevice(_profile(PROFILES / "relay-8ch.yaml"))


def _mask(sim: SimulatedDevice) -> int:
    (word,) = read(sim.bank, RegisterKind.HOLDING, 0x009D, 1)
    return word


def test_relay_channel_command_switches_its_bit_in_the_bank(relays: SimulatedDevice) -> None:
    assert _mask(relays) == 0b0011_1111  # the simulation: channels 1-6 on
    relays.bank.write(RegisterKind.HOLDING, 0x00AA, [0x0300])  # channel 3 off
    assert _mask(relays) == 0b0011_1011
    relays.bank.write(RegisterKind.HOLDING, 0x00AA, [0x0801])  # channel 8 on
    assert _mask(relays) == 0b1011_1011
    assert relays.value("relay3") is False
    assert relays.value("relay8") is True


@given(st.lists(st.tuples(st.integers(1, 8), st.booleans()), max_size=20))
def test_relay_commands_over_the_wire_keep_the_other_channels(
    commands: list[tuple[int, bool]],
) -> None:
    sim = SimulatedDevice(_profile(PROFILES / "relay-8ch.yaml"))
    model = _mask(sim)
    for channel, on in commands:
        spec = sim.profile.points[f"relay{channel}"]
        request = codec.encode_write(spec, on)
        assert request.function == 6
        assert write(sim.bank, request)[0] == 6
        model = model | (1 << channel - 1) if on else model & ~(1 << channel - 1)
        assert _mask(sim) == model


@pytest.mark.parametrize(
    "word",
    [
        pytest.param(0x0901, id="no-channel-9"),
        pytest.param(0x0001, id="no-channel-0"),
        pytest.param(0x0302, id="state-not-0-or-1"),
    ],
)
def test_relay_refuses_a_bad_channel_command(relays: SimulatedDevice, word: int) -> None:
    before = _mask(relays)
    with pytest.raises(RequestRefusedError) as caught:
        relays.bank.write(RegisterKind.HOLDING, 0x00AA, [word])
    assert caught.value.code == ExceptionCode.ILLEGAL_DATA_VALUE
    answer = _answer(relays.bank, Request(UNIT, 6, 0x00AA, 1, (word,)))
    assert answer == bytes([0x86, ExceptionCode.ILLEGAL_DATA_VALUE])
    assert _mask(relays) == before


def test_relay_broadcast_command_is_applied_silently(relays: SimulatedDevice) -> None:
    assert handle_request({UNIT: relays.bank}, Request(0, 6, 0x00AA, 1, (0x0100,))) is None
    assert relays.value("relay1") is False


def test_write_effects_come_from_the_profile_not_the_model() -> None:
    """Any profile's channel_byte blocks get the effect, whatever register they use."""
    points: dict[str, object] = {
        f"out{n}": {
            "kind": "input",
            "address": 40,
            "type": "u32",
            "bit": 16 + n,
            "access": "r",
        }
        for n in range(2)
    }
    points["door"] = {
        "address": 5,
        "bit": 9,
        "access": "rw",
        "write": {"address": 200, "encoding": "channel_byte", "channel": 42},
    }
    sim = SimulatedDevice(_inline(points))
    assert sim.value("door") is False
    request = codec.encode_write(sim.profile.points["door"], True)
    assert request == (RegisterKind.HOLDING, 200, [42 << 8 | 1])
    assert write(sim.bank, request)[0] == 6
    assert read(sim.bank, RegisterKind.HOLDING, 5, 1) == [1 << 9]


def test_value_written_elsewhere_is_read_back_at_the_point() -> None:
    profile = _inline(
        {
            "actual": {"address": 10, "type": "f32", "unit": "A"},
            "setpoint": {
                "address": 12,
                "type": "f32",
                "access": "rw",
                "write_min": 0,
                "write_max": 32,
                "write": {"address": 100},
            },
            "switch": {
                "kind": "coil",
                "address": 3,
                "type": "bool",
                "access": "rw",
                "write": {"address": 9},
            },
        },
        limits={"max_gap": 4},
    )
    sim = SimulatedDevice(profile)
    request = codec.encode_write(profile.points["setpoint"], 13.5)
    assert (request.address, request.function) == (100, 16)
    assert write(sim.bank, request)[0] == 16
    assert read_point(sim, "setpoint") == 13.5
    assert write(sim.bank, codec.encode_write(profile.points["switch"], True))[0] == 5
    assert read_point(sim, "switch") is True
    # A partial write of the target changes nothing but the register written.
    sim.bank.write(RegisterKind.HOLDING, 100, [0x4000])
    assert read_point(sim, "setpoint") == 13.5


# --- the register map the simulator exposes -----------------------------------------------


def test_strings_and_bit_points_share_nothing_they_should_not() -> None:
    sim = SimulatedDevice(_profile(PROFILES / "alfen-ng9xx.yaml"))
    assert read(sim.bank, RegisterKind.HOLDING, 1201, 5) == [0x4332, 0, 0, 0, 0]  # "C2"
    assert sim.value("mode3_state") == "C2"
    sim.set_value("mode3_state", "B1")
    assert read_point(sim, "mode3_state") == "B1"
    lamp = SimulatedDevice(_profile(PROFILES / "lamp-controller.yaml"))
    lamp.set_value("supply_loss", True)
    lamp.set_value("lamp_failure", True)
    assert read(lamp.bank, RegisterKind.INPUT, 0x000A, 1) == [0b10_0001]
    lamp.set_value("supply_loss", False)
    assert read(lamp.bank, RegisterKind.INPUT, 0x000A, 1) == [0b00_0001]


def test_gaps_are_mapped_except_refused_areas() -> None:
    profile = _inline(
        {"a": {"address": 0}, "b": {"address": 6}, "far": {"address": 40}},
        limits={"max_gap": 5, "refused": [{"kind": "holding", "start": 2, "end": 3}]},
    )
    sim = SimulatedDevice(profile)
    assert read(sim.bank, RegisterKind.HOLDING, 0, 2) == [0, 0]
    assert read(sim.bank, RegisterKind.HOLDING, 4, 3) == [0, 0, 0]
    for refused in (2, 3):
        pdu = _answer(sim.bank, Request(UNIT, 3, refused, 1))
        assert pdu == bytes([0x83, ExceptionCode.ILLEGAL_DATA_ADDRESS])
    pdu = _answer(sim.bank, Request(UNIT, 3, 7, 1))  # beyond max_gap: unmapped
    assert pdu == bytes([0x83, ExceptionCode.ILLEGAL_DATA_ADDRESS])


def test_alfen_refuses_reads_into_the_hole_between_its_blocks() -> None:
    sim = SimulatedDevice(_profile(PROFILES / "alfen-ng9xx.yaml"))
    assert len(read(sim.bank, RegisterKind.HOLDING, 306, 72)) == 72  # the planned block
    for address, count in ((374, 60), (426, 1), (1199, 2)):
        pdu = _answer(sim.bank, Request(UNIT, 3, address, count))
        assert pdu == bytes([0x83, ExceptionCode.ILLEGAL_DATA_ADDRESS]), (address, count)


def test_a_lamp_controller_falls_back_when_its_lease_lapses() -> None:
    now = [0.0]
    profile = load_profile(PROFILES / "lamp-controller.yaml")
    assert isinstance(profile, ModbusProfile)
    device = SimulatedDevice(profile, clock=lambda: now[0])
    device.set_value("fallback_level", 70)
    device.set_value("lease_timeout", 60)
    dim = profile.points["dim_level"]
    device.bank.write(dim.kind, dim.address, [20])  # the agent's write starts the lease
    now[0] = 59.0
    assert device.value("dim_level") == 20
    device.bank.write(dim.kind, dim.address, [30])  # refreshed in time
    now[0] = 118.0
    assert device.value("dim_level") == 30
    now[0] = 119.5
    assert device.value("dim_level") == 70  # lapsed: the road-safe fallback
    assert device.value("lamp_on") is True
    assert device.lease is not None
    assert device.lease.expirations == 1
    now[0] = 1000.0
    assert device.value("dim_level") == 70  # no new write, nothing more happens
    assert device.lease.expirations == 1
