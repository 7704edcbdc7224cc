"""Everything that talks to a device: transports, protocols, profile codecs, simulators.

Nothing here knows about the agent's control logic or uplink; the agent depends on the
drivers, never the other way round.
"""
