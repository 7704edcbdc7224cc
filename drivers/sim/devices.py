"""A simulated device: a profile's points held in a register bank, drifting like the real thing.

Values are encoded with the same codec the agent decodes with, so a rig exercises the real
path from registers to points. The drift is a bounded random walk from the profile's
``simulation`` section, seeded so two rig runs see the same sequence.
"""

from __future__ import annotations

import random
from itertools import pairwise

from smartpole.drivers.modbus import codec
from smartpole.drivers.modbus.codec import Value
from smartpole.drivers.modbus.rtu_slave import RegisterBank
from smartpole.drivers.profile import DataType, ModbusProfile, PointSpec


class SimulatedDevice:
    def __init__(self, profile: ModbusProfile, *, seed: int = 0) -> None:
        self.profile = profile
        self.bank = RegisterBank()
        self.values: dict[str, Value] = {}
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
        for name, spec in profile.points.items():
            sim = profile.simulation.get(name)
            self.set_value(name, sim.start if sim is not None else _neutral(spec))
        self._fill_gaps()

    def set_value(self, point: str, value: Value) -> None:
        """Put an engineering value into the registers (rigs use this to script scenarios)."""
        spec = self.profile.points[point]
        if spec.type is not DataType.F32 and spec.type is not DataType.F64 and spec.scale == 1:
            value = round(float(value))
        self.bank.set(spec.kind, spec.address, codec.encode(spec, value))
        self.values[point] = codec.decode(spec, codec.encode(spec, value))

    def step(self) -> None:
        """Move every simulated point one random step, staying inside its bounds."""
        for name, sim in self.profile.simulation.items():
            if sim.step == 0:
                continue
            current = float(self.values[name])
            proposed = current + self._rng.uniform(-sim.step, sim.step)
            self.set_value(name, min(sim.max, max(sim.min, proposed)))

    def _fill_gaps(self) -> None:
        """Map the registers a merged read may cross (``max_gap``) as zeros, like the device."""
        gap = self.profile.limits.max_gap
        if gap == 0:
            return
        ordered = sorted(self.profile.points.values(), key=lambda s: (s.kind, s.address))
        for before, after in pairwise(ordered):
            hole = after.address - before.end
            if before.kind == after.kind and 0 < hole <= gap:
                self.bank.set(before.kind, before.end, [0] * hole)


def _neutral(spec: PointSpec) -> Value:
    if spec.type is DataType.BOOL:
        return False
    if spec.valid_range is not None:
        return spec.valid_range[0]
    return spec.offset
