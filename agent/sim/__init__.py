"""``smartpole sim``: a pole's devices played by the simulators in ``smartpole.drivers.sim``.

``serve`` builds one simulator per bus from a pole config and runs them until a signal;
``mcu`` adapts the MCU emulator to the verbs every simulated device answers to.
"""
