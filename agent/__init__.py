"""The smartpole daemon: configuration, lifecycle, control logic, local API and CLI."""
