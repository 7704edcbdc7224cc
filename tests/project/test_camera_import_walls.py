"""The walls around the camera code, checked on what a fresh interpreter actually loads.

The control process supervises camera workers but must never load what they run (Numba,
ONNX Runtime, PyAV, numpy, or anything under ``smartpole.models``): a crash or a stall in
those libraries stays in the worker, and the daemon stays small. The camera schema and the
worker protocol are imported by both sides, so they must be as light, and, being config,
import nothing from the runtime rooms of the agent.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

ANALYTICS = ("numba", "onnxruntime", "av", "numpy", "smartpole.models")
RUNTIME = ("smartpole.agent.control", "smartpole.agent.buses", "smartpole.agent.uplink")


def _loaded(module: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        f"prefixes = {prefixes!r}\n"
        "print('\\n'.join(sorted(m for m in sys.modules"
        " if any(m == p or m.startswith(p + '.') for p in prefixes))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.split()


@pytest.mark.parametrize(
    "module",
    [
        "smartpole.agent.cameras",
        "smartpole.agent.config.cameras",
        "smartpole.agent.config.camera_worker",
    ],
)
def test_the_control_side_of_the_cameras_loads_no_analytics(module: str) -> None:
    assert _loaded(module, ANALYTICS) == []


@pytest.mark.parametrize(
    "module", ["smartpole.agent.config.cameras", "smartpole.agent.config.camera_worker"]
)
def test_the_camera_schema_and_protocol_import_no_runtime(module: str) -> None:
    assert _loaded(module, RUNTIME) == []
