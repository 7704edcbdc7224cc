"""Northbound: the MQTT uplink that drains the outbox to the city platform, telemetry by
exception, platform commands, and the OPC UA server for SCADA clients."""
