"""Northbound: the MQTT uplink that drains the outbox to the city platform (issue 7)."""
