"""What every command-line front end shares: exit codes, a config loaded for a command,
and a value a technician typed.

Exit codes: 0 success, 1 a runtime failure (daemon not reachable, port in use), 2 bad input
(invalid configuration or arguments), so scripts and systemd can tell them apart.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

from smartpole.agent.buses.registry import load_config
from smartpole.agent.config.loader import LoadedConfig
from smartpole.agent.core.errors import ConfigError, UsageError

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_BAD_INPUT: Final = 2


def load_or_exit(path: Path) -> LoadedConfig:
    """The config at ``path``, or every problem on stderr and exit 2: a command run on a
    broken config tells the technician all that is wrong at once, not the first thing."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from exc


def parse_value(text: str) -> object:
    """A value typed on the command line: true/false (or on/off), an integer, a number."""
    lowered = text.lower()
    if lowered in ("true", "on"):
        return True
    if lowered in ("false", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a number, true/false or on/off") from None
