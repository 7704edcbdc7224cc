"""Everything that plays a device, for rigs and tests: real protocols over ptys and TCP.

``server`` is the skeleton a simulator runs on (an endpoint from ``pty`` or ``tcp``, a
conversation per line, progress waits); ``bus`` adds what a bus of addressed devices
shares (per-device ``faults``, one ``SimStats``, reply timing). ``dlt645``, ``pelco_d``
and the ``mcu`` package (the MCU's twin and its emulator) are built on them; ``rtu_pty``
and ``modbus_tcp`` (with ``devices``, the Modbus register banks) manage their own pty
and listener.
"""
