"""The production systemd unit: systemd itself accepts it, and the sandbox stays on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO

UNIT = REPO / "configs" / "systemd" / "smartpole.service"

# ExecStart names /opt/smartpole/bin/smartpole and `verify` insists it is executable, so
# mount a throwaway /opt in a private mount namespace (unshare makes its mounts private)
# with a link to this venv's console script: the host's /opt is never touched.
VERIFY_SCRIPT = (
    "mount -t tmpfs none /opt"
    " && mkdir -p /opt/smartpole/bin"
    ' && ln -s "$SMARTPOLE_BIN" /opt/smartpole/bin/smartpole'
    ' && systemd-analyze verify "$SMARTPOLE_UNIT"'
)


def _require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed (Debian package {package}); "
            "`make test` installs it via scripts/setup-system.sh",
            pytrace=False,
        )
    return path


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections to (key, value) pairs in order; keys such as DeviceAllow repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {lineno}: continuation lines are not used here"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"line {lineno}: setting outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"line {lineno}: not a key=value line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def single(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}= should be set exactly once, found {found}"
    return found[0]


def test_systemd_analyze_verify_is_clean() -> None:
    _require_tool("systemd-analyze", "systemd")
    _require_tool("unshare", "util-linux")
    smartpole_bin = Path(sys.executable).parent / "smartpole"
    assert smartpole_bin.exists(), (
        f"console script {smartpole_bin} is missing: install the project "
        "(`pip install -e .`) so [project.scripts] smartpole is generated"
    )
    unshare = ["unshare", "--mount"]
    if os.geteuid() != 0:
        # Not root: a user namespace grants the right to mount inside it.
        unshare.append("--map-root-user")
    result = subprocess.run(
        [*unshare, "sh", "-c", VERIFY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SMARTPOLE_BIN": str(smartpole_bin), "SMARTPOLE_UNIT": str(UNIT)},
    )
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # verify reports unknown or misspelt settings on stderr yet may still exit 0.
    assert result.returncode == 0, output
    assert result.stdout == "", output
    assert result.stderr == "", output


def test_unit_keeps_the_non_negotiables() -> None:
    unit = parse_unit(UNIT.read_text(encoding="utf-8"))
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]

    assert single(service, "Type") == "notify"
    assert single(service, "NotifyAccess") == "main"
    watchdog = single(service, "WatchdogSec")
    assert watchdog.isdigit(), watchdog
    assert int(watchdog) > 0
    assert single(service, "Restart") == "always"
    assert "2" in single(service, "RestartPreventExitStatus").split()
    assert single(service, "StateDirectory") == "smartpole"
    assert single(service, "RuntimeDirectory") == "smartpole"
    assert single(service, "User") == "smartpole"
    assert "dialout" in single(service, "SupplementaryGroups").split()
    assert single(service, "ProtectSystem") == "strict"
    assert single(service, "NoNewPrivileges") == "yes"
    assert single(service, "PrivateTmp") == "yes"
    assert single(service, "ProtectHome") == "yes"
    assert single(service, "CapabilityBoundingSet") == ""
    assert single(service, "DevicePolicy") == "closed"
    assert set(values(service, "DeviceAllow")) == {
        "char-ttyS rw",
        "char-ttyUSB rw",
        "char-ttyACM rw",
    }
    # The analytics workers JIT-compile (Numba, ONNX Runtime): W^X would kill them.
    truthy = {"yes", "true", "on", "1"}
    assert not truthy.intersection(values(service, "MemoryDenyWriteExecute"))
    assert single(service, "ExecStart").startswith("/opt/smartpole/bin/smartpole run ")

    assert single(unit["Install"], "WantedBy") == "multi-user.target"


def test_parse_unit_keeps_repeated_keys() -> None:
    text = "[Service]\n# comment\nDeviceAllow=a rw\nDeviceAllow=b rw\nCapabilityBoundingSet=\n"
    service = parse_unit(text)["Service"]
    assert values(service, "DeviceAllow") == ["a rw", "b rw"]
    assert single(service, "CapabilityBoundingSet") == ""
