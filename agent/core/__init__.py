"""The nouns and stores every part of the agent shares: points, errors, health, audit, outbox.

Nothing here imports any other folder of the agent, so buses, control, config and uplink
can all stand on it without importing each other.
"""
