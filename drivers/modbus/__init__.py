"""Modbus: register codecs, RTU and MBAP framing, our own Modbus TCP client, and pymodbus for
RTU serial and RTU over TCP (imported only when a bus uses them)."""
