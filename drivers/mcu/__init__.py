"""The pole-MCU bridge (firmware-bridge/PROTOCOL.md): framing, messages, dictionary, twin.

``frame`` and ``msgproto`` are the codecs both sides share; ``dictionary`` holds the
canonical dictionary bytes; ``twin`` is a deterministic Python model of the MCU's logic
that the emulator runs and the C implementation is checked against (via the vectors).
"""
