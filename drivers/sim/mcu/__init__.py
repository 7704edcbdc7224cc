"""The pole MCU played by the host: its twin, its UART, and the emulator on a pty.

``twin`` is a deterministic Python model of the MCU's firmware (``twin_logic`` and
``twin_state`` hold its pole logic and state) that the emulator runs and the C
implementation is checked against through the vectors ``twin_session`` records. ``wire``
is the emulated UART between the two: its timing and its faults.
"""
