"""Modbus: register codecs, RTU framing for the simulators, and the pymodbus-based client."""
