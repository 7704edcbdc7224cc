"""Everything that plays a device, for rigs and tests: real protocols over ptys and TCP.

``server`` is the skeleton a simulator runs on (an endpoint from ``pty`` or ``tcp``, a
conversation per line, progress waits); ``bus`` adds what a bus of addressed devices
shares (per-device ``faults``, one ``SimStats``, reply timing). Every protocol's
simulator is built on them: ``dlt645``, ``pelco_d``, the ``mcu`` package (the MCU's twin
and its emulator), and the Modbus ones, ``rtu_pty`` and ``modbus_tcp``, which share
``rtu_line`` (hearing and answering RTU on any line) and serve the register banks of
``modbus_bank`` and ``devices``.
"""
