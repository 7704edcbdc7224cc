"""Modbus devices for ``smartpole sim``: a register bank per device, served on a pty (RTU)
or a loopback port (TCP, RTU over TCP), with the profile's values drifting or its manual's
first test vector."""

from __future__ import annotations

from smartpole.agent.buses.kind import ServedDevice, SimContext, SimulatedBus
from smartpole.agent.buses.modbus.config import ModbusBus, ModbusRtuBus, ModbusTcpBus
from smartpole.drivers.modbus.points import RegisterKind
from smartpole.drivers.sim.devices import SimulatedDevice
from smartpole.drivers.sim.modbus_tcp import ModbusTcpServer
from smartpole.drivers.sim.rtu_pty import RtuPtyServer


async def simulate(name: str, bus: ModbusBus, context: SimContext) -> SimulatedBus:
    banks = {}
    models: dict[str, tuple[int, SimulatedDevice]] = {}
    for offset, (device_name, device) in enumerate(context.devices_on(name).items()):
        model = SimulatedDevice(
            context.config.modbus_profile_of(device_name), seed=context.seed + offset
        )
        if context.values == "vectors":
            _load_first_vector(model)
        model.bank.max_read = context.max_reads.get(device_name)
        unit = device.unit_id if device.unit_id is not None else 1
        banks[unit] = model.bank
        models[device_name] = (unit, model)
    server: RtuPtyServer | ModbusTcpServer
    if isinstance(bus, ModbusRtuBus):
        server = RtuPtyServer(
            banks,
            baudrate=bus.baudrate,
            turnaround_s=context.turnaround_s,
            listen_window_s=context.listen_window_s,
        )
    else:
        server = ModbusTcpServer(
            banks,
            framing="tcp" if isinstance(bus, ModbusTcpBus) else "rtu",
            turnaround_s=context.turnaround_s,
        )
    await context.stack.enter_async_context(server)
    walk = context.values == "walk"
    devices = {
        device_name: ServedDevice(server, unit, model, walk=walk)
        for device_name, (unit, model) in models.items()
    }
    return SimulatedBus(server.where, devices)


def _load_first_vector(model: SimulatedDevice) -> None:
    """Serve the raw registers of the profile's first test vector, as the manual prints them."""
    if not model.profile.test_vectors:
        return
    vector = model.profile.test_vectors[0]
    areas = (
        (RegisterKind.HOLDING, vector.holding),
        (RegisterKind.INPUT, vector.input),
        (RegisterKind.COIL, vector.coil),
        (RegisterKind.DISCRETE, vector.discrete),
    )
    for kind, area in areas:
        for start, words in area.items():
            model.bank.set(kind, start, [int(w) for w in words])
