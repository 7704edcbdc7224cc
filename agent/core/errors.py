"""The agent's exception family; drivers have their own in ``smartpole.drivers.errors``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a configuration file, located so a person can go and fix it."""

    file: Path
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}"
        key = self.key or "(top level)"
        return f"{where}: {key}: {self.message}"


class ConfigError(AgentError):
    """The configuration cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (str(p.file), p.line or 0, p.key))
        count = len(self.problems)
        super().__init__(f"{count} configuration problem{'s' if count != 1 else ''}")


class RequestError(AgentError):
    """A request the daemon understood but cannot do; the caller gets the message."""


class UsageError(AgentError):
    """A command-line argument names something the configuration does not have."""


class ApiError(AgentError):
    """The local API could not be reached or answered with an error."""
