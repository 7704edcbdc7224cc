"""What the command processor needs from the pole: the commands, typed.

``PoleOperations`` (``agent/operations.py``) provides it; the processor calls it only after
the command passed every check, with the audit actor. Refusals come back as
``RequestError``, ``WriteRejectedError`` or ``PowerRefusedError`` (nothing was switched),
device failures as driver errors.
"""

from __future__ import annotations

from typing import Protocol


class CommandExecutor(Protocol):
    async def set_level(
        self,
        lamp: str,
        level: int,
        actor: str,
        *,
        point: str = "dim_level",
        duration_s: float | None = None,
    ) -> object: ...

    async def override(self, lamp: str, level: int, duration_s: float, actor: str) -> object: ...

    async def clear_override(self, lamp: str, actor: str) -> object: ...

    async def relay(self, device: str, point: str, on: bool, actor: str) -> object: ...

    async def power_cycle(self, device: str, actor: str) -> object: ...

    async def ptz(self, device: str, preset: int, actor: str) -> object: ...

    async def reset_alarm(self, alarm_id: str, actor: str) -> object: ...

    async def report_now(self, actor: str) -> object: ...
