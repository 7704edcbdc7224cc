"""The analytics' exception family.

A camera worker catches these and nothing wider: each one maps to a health state the control
process can act on (``SourceError``: power-cycle or fix the camera URL; ``ModelError``: fix
the model file; ``AnalyticsConfigError``: fix the configuration). Library exceptions (PyAV,
ONNX Runtime) are translated with ``raise ... from`` so they never leak past ``models/``.
"""

from __future__ import annotations


class SourceError(Exception):
    """A video source cannot deliver frames: unopenable, no video stream, unsupported URL."""


class ModelError(Exception):
    """A model file is missing, unreadable, or its inputs/outputs are not the expected shape."""


class AnalyticsConfigError(Exception):
    """An analytics setting cannot work (line outside the frame, zero-area zone, ...)."""
