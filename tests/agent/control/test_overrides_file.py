"""overrides.json, the one state file whose format changed with schema versions: version 1
was the map of lamps itself (no room for a version); version 2 holds it under "overrides".
An override set before the upgrade survives it, and the release before reads its copy."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from smartpole.agent.control.lighting import OVERRIDES_FILE, LightingController, Override
from smartpole.agent.control.program import Decision
from smartpole.agent.core.state_schema import copy_name


class Lamp:
    async def commission(self, lamp: str, *, fallback_level: int, lease_s: int) -> None:
        pass

    async def push(self, lamp: str, level: int, *, changed: bool) -> None:
        pass


class Off:
    def level_at(self, lamp: str, at: datetime) -> Decision:
        return Decision(0, "day", "program", None)


def controller(state: Path) -> LightingController:
    return LightingController(["lamp1"], Off(), Lamp(), state_dir=state)  # type: ignore[arg-type]


def test_an_override_of_the_release_before_survives_the_upgrade(tmp_path: Path) -> None:
    now = time.time()
    path = tmp_path / OVERRIDES_FILE
    old = json.dumps(
        {"lamp1": {"level": 30, "expires_at": now + 3600, "actor": "cli:uid=0", "set_at": now}}
    ).encode()
    path.write_bytes(old)  # as the release before versions wrote it

    lights = controller(tmp_path)
    target = lights.target("lamp1")
    assert (target.source, target.level) == ("override", 30)
    saved = json.loads(path.read_text())
    assert saved["version"] == 2
    assert saved["overrides"]["lamp1"]["level"] == 30
    # The release before reads its copy the way it always read the file.
    copy = copy_name(path, 1)
    assert copy.read_bytes() == old
    assert {lamp: Override(**item) for lamp, item in json.loads(copy.read_text()).items()}

    lights.set_override("lamp1", 55, 60, "cli:uid=0")  # written as version 2
    assert json.loads(path.read_text())["overrides"]["lamp1"]["level"] == 55
    assert controller(tmp_path).target("lamp1").level == 55  # read back after a restart
