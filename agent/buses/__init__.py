"""Bus tasks: one per physical bus or TCP endpoint, each the only user of its line."""
