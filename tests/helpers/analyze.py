"""``smartpole analyze --json`` as a user runs it: a subprocess with the model the package
ships (neither ``--model`` nor ``$SMARTPOLE_MODEL``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from helpers.processes import SMARTPOLE


def analyze_json(clip: Path, line: str) -> dict[str, Any]:
    """The ``--json`` object for ``clip`` counted at ``line`` ("X1,Y1,X2,Y2")."""
    environ = {k: v for k, v in os.environ.items() if k != "SMARTPOLE_MODEL"}
    done = subprocess.run(
        [*SMARTPOLE, "analyze", str(clip), "--line", line, "--json"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=environ,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result
