"""Pole control: lighting programs, fail-safe leases, lamp faults, safety alarms, power."""
