"""The pole-MCU bridge as the host speaks it (firmware-bridge/PROTOCOL.md).

``frame`` and ``msgproto`` are the codecs both sides share (the MCU's twin in
``smartpole.drivers.sim.mcu`` uses them too); ``codes`` and ``dictionary`` hold the
protocol's numbers and the canonical dictionary bytes. The rest is the host stack: the
port, the acknowledged link, requests, the connect sequence, events and the client.
"""
