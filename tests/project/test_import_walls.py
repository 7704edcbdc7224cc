"""The walls between the processes, checked on what a fresh interpreter actually loads.

``make contracts`` checks the static import graph with import-linter; these tests check what
importing a module really loads, which includes imports made at run time and whatever the
third-party packages pull in.

* The control process (the daemon, its composition root and the CLI that starts it) never
  loads the analytics the camera workers run: Numba, ONNX Runtime, PyAV, numpy, or anything
  under ``smartpole.models``. A crash or a stall in those stays in a worker, and the daemon
  stays small.
* asyncua costs about 25 MB of resident memory, against a budget of 60 MB for the whole
  gateway, so the daemon imports it (and cryptography) only for a pole with an ``opcua:``
  section.
* The daemon never plays a device: the simulators (``smartpole.drivers.sim``) and the
  ``smartpole sim`` front end load only in a simulator process, although every protocol's
  plug-in declares its simulator.
* The camera schema and the worker protocol are imported by both sides, so they must be as
  light, and, being config, import nothing from the runtime rooms of the agent.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.paths import REPO

ANALYTICS = ("numba", "onnxruntime", "av", "numpy", "smartpole.models")
OPCUA = ("asyncua", "cryptography")
RUNTIME = ("smartpole.agent.control", "smartpole.agent.buses", "smartpole.agent.uplink")
CONTROL_PROCESS = ("smartpole.agent.daemon", "smartpole.agent.pole", "smartpole.agent.cli")
DEMO = REPO / "configs" / "poles" / "demo.yaml"


def _loaded(modules: tuple[str, ...], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` a fresh interpreter has loaded after importing ``modules``."""
    code = (
        "import sys, importlib\n"
        f"for module in {modules!r}:\n"
        "    importlib.import_module(module)\n"
        f"packages = {packages!r}\n"
        "print('\\n'.join(p for p in packages"
        " if any(m == p or m.startswith(p + '.') for m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.split()


def test_the_control_process_loads_no_analytics() -> None:
    assert _loaded(CONTROL_PROCESS, ANALYTICS) == []


def test_the_control_process_loads_no_simulator() -> None:
    """The plug-ins are discovered and a whole pole config is loaded, as ``smartpole run``
    does before it starts."""
    code = (
        "import sys\n"
        "import smartpole.agent.daemon\n"
        "from smartpole.agent.buses.registry import load_config\n"
        f"load_config(__import__('pathlib').Path({str(DEMO)!r}))\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith(("
        "'smartpole.drivers.sim', 'smartpole.agent.sim')))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == []


def test_loading_the_daemon_and_a_config_does_not_import_asyncua() -> None:
    assert _loaded(("smartpole.agent.daemon", "smartpole.agent.config.loader"), OPCUA) == []


@pytest.mark.parametrize(
    "module",
    [
        "smartpole.agent.cameras",
        "smartpole.agent.config.cameras",
        "smartpole.agent.config.camera_worker",
    ],
)
def test_the_control_side_of_the_cameras_loads_no_analytics(module: str) -> None:
    assert _loaded((module,), ANALYTICS) == []


@pytest.mark.parametrize(
    "module", ["smartpole.agent.config.cameras", "smartpole.agent.config.camera_worker"]
)
def test_the_camera_schema_and_protocol_import_no_runtime(module: str) -> None:
    assert _loaded((module,), RUNTIME) == []
