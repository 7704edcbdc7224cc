"""The release switcher (package/smartpole_release.py), run as on a pole.

The system's Python 3.11 without site-packages (``-S``) and without the environment's
Python settings (``-E``), so an import from outside the standard library fails here too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.paths import REPO

TOOL = REPO / "package" / "smartpole_release.py"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
if not SYSTEM_PYTHON.exists():
    pytest.fail(f"{SYSTEM_PYTHON} is missing (Debian package python3.11-venv)", pytrace=False)
TOOL_ARGV = [str(SYSTEM_PYTHON), "-S", "-E", str(TOOL)]
