"""Pelco-D: the PTZ camera control protocol on RS-485 (presets, stop, pan and tilt)."""
