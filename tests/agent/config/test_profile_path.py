"""``profiles_dir`` as one folder or a search path: the site's folder before the shipped
one, the first holding a name wins, and every message and listing says which folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.paths import PROFILES
from helpers.processes import SMARTPOLE
from smartpole.agent.buses.registry import load_config
from smartpole.agent.config.profile_path import ProfilePath, profile_sources
from smartpole.agent.core.errors import ConfigError, Problem

SITE_NOTE = "the site's own copy"


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    """A shipped folder (two real profiles) and a site folder whose cwt-uwd shadows it."""
    shipped = tmp_path / "usr-share" / "profiles"
    site = tmp_path / "etc" / "profiles.d"
    shipped.mkdir(parents=True)
    site.mkdir(parents=True)
    for name in ("cwt-uwd", "eastron-sdm120"):
        shutil.copy(PROFILES / f"{name}.yaml", shipped)
    copy = yaml.safe_load((PROFILES / "cwt-uwd.yaml").read_text())
    copy["description"] = SITE_NOTE
    (site / "cwt-uwd.yaml").write_text(yaml.safe_dump(copy, sort_keys=False))
    return shipped, site


def _pole(tmp_path: Path, profiles_dir: Any, *profiles: str) -> Path:
    devices = {
        f"d{i}": {"profile": name, "bus": "rs485-1", "unit_id": i + 1}
        for i, name in enumerate(profiles)
    }
    data = {
        "pole": {"id": "path-pole"},
        "profiles_dir": profiles_dir,
        "buses": {"rs485-1": {"type": "modbus-rtu", "port": "/dev/ttyUSB0"}},
        "devices": devices,
    }
    path = tmp_path / "etc" / "pole.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def _smartpole(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SMARTPOLE, *args], capture_output=True, text=True, timeout=60)


def test_the_site_folder_shadows_the_shipped_one(tmp_path: Path) -> None:
    shipped, site = _folders(tmp_path)
    path = _pole(tmp_path, [str(site), str(shipped)], "cwt-uwd", "eastron-sdm120")
    loaded = load_config(path)
    assert loaded.profile_files == {
        "cwt-uwd": site / "cwt-uwd.yaml",
        "eastron-sdm120": shipped / "eastron-sdm120.yaml",
    }
    assert loaded.profiles["cwt-uwd"].description == SITE_NOTE
    # The other order: the shipped one wins.
    path = _pole(tmp_path, [str(shipped), str(site)], "cwt-uwd")
    assert load_config(path).profile_files == {"cwt-uwd": shipped / "cwt-uwd.yaml"}


def test_relative_folders_are_taken_from_the_configs_folder(tmp_path: Path) -> None:
    shipped, site = _folders(tmp_path)
    path = _pole(tmp_path, ["profiles.d", "../usr-share/profiles"], "cwt-uwd", "eastron-sdm120")
    assert load_config(path).profile_files == {
        "cwt-uwd": site / "cwt-uwd.yaml",
        "eastron-sdm120": shipped / "eastron-sdm120.yaml",
    }


def test_one_folder_as_a_string_still_works(tmp_path: Path) -> None:
    shipped, _ = _folders(tmp_path)
    path = _pole(tmp_path, str(shipped), "cwt-uwd")
    assert load_config(path).profile_files == {"cwt-uwd": shipped / "cwt-uwd.yaml"}


def test_an_unknown_profile_names_every_folder_searched(tmp_path: Path) -> None:
    shipped, site = _folders(tmp_path)
    path = _pole(tmp_path, [str(site), str(shipped)], "cwt-uwd", "no-such-meter")
    (problem,) = _problems(path)
    assert problem.key == "devices.d1.profile"
    assert problem.message == (
        f"unknown profile 'no-such-meter': no no-such-meter.yaml in any of {site}, {shipped};"
        " known: cwt-uwd, eastron-sdm120"
    )


def test_a_missing_folder_in_the_list_is_reported_at_its_line(tmp_path: Path) -> None:
    shipped, _ = _folders(tmp_path)
    absent = tmp_path / "etc" / "no-such-folder"
    path = _pole(tmp_path, [str(absent), str(shipped)], "cwt-uwd")
    (problem,) = _problems(path)
    assert problem.key == "profiles_dir[0]"
    text = path.read_text().splitlines()
    assert problem.line is not None
    assert str(absent) in text[problem.line - 1]
    assert problem.message == f"no profiles folder {absent}"


@pytest.mark.parametrize(
    "value",
    [[], [""], "", 5, [str(PROFILES), 5]],
    ids=["empty-list", "empty-name", "empty-string", "number", "number-in-list"],
)
def test_what_is_not_a_folder_or_a_list_of_folders_is_a_schema_error(
    tmp_path: Path, value: object
) -> None:
    path = _pole(tmp_path, value, "cwt-uwd")
    problems = _problems(path)
    assert problems
    assert all(p.key.startswith("profiles_dir") for p in problems), problems


def test_config_check_and_version_say_which_folder_each_profile_came_from(
    tmp_path: Path,
) -> None:
    shipped, site = _folders(tmp_path)
    path = _pole(tmp_path, [str(site), str(shipped)], "cwt-uwd", "eastron-sdm120")
    checked = _smartpole("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    ok_line = checked.stdout.splitlines()[0]
    assert f"profiles: cwt-uwd from {site}; eastron-sdm120 from {shipped}" in ok_line
    version = _smartpole("--version", str(path))
    assert version.returncode == 0, version.stderr
    lines = version.stdout.splitlines()
    assert any(
        ln.startswith("  profile cwt-uwd ") and ln.endswith(f" {site / 'cwt-uwd.yaml'}")
        for ln in lines
    ), lines
    assert any(ln.endswith(f" {shipped / 'eastron-sdm120.yaml'}") for ln in lines), lines


def test_scan_with_a_profile_the_config_does_not_use_searches_every_folder(
    tmp_path: Path,
) -> None:
    shipped, site = _folders(tmp_path)
    path = _pole(tmp_path, [str(site), str(shipped)], "cwt-uwd")
    result = _smartpole(
        "diag", "scan", "--port", "/dev/null", "--config", str(path), "--profile", "nope"
    )
    assert result.returncode != 0
    assert f"no profile 'nope' in {site}, {shipped}" in result.stderr
    assert "(profiles: cwt-uwd, eastron-sdm120)" in result.stderr


def test_profile_sources_groups_names_by_folder() -> None:
    files = {"b": Path("/s/b.yaml"), "a": Path("/e/a.yaml"), "c": Path("/e/c.yaml")}
    assert profile_sources(files) == "a, c from /e; b from /s"
    assert profile_sources({}) == ""


def test_find_takes_the_first_folder_holding_the_name(tmp_path: Path) -> None:
    shipped, site = _folders(tmp_path)
    search = ProfilePath.of([str(site), str(shipped)], tmp_path / "pole.yaml")
    assert search.find("cwt-uwd") == site / "cwt-uwd.yaml"
    assert search.find("eastron-sdm120") == shipped / "eastron-sdm120.yaml"
    assert search.find("nope") is None
    assert search.known() == ["cwt-uwd", "eastron-sdm120"]


def test_names_the_file_system_cannot_take_are_problems_not_crashes(tmp_path: Path) -> None:
    """A folder or profile name beyond NAME_MAX made the check crash (ENAMETOOLONG)."""
    shipped, _ = _folders(tmp_path)
    long = "x" * 3000
    (problem,) = _problems(_pole(tmp_path, [long, str(shipped)], "cwt-uwd"))
    assert problem.key == "profiles_dir[0]"
    assert problem.message.startswith(f"cannot use profiles folder {tmp_path / 'etc' / long}: ")
    assert problem.message.endswith(": File name too long")
    problems = _problems(_pole(tmp_path, [str(shipped)], long))
    assert {p.key for p in problems} == {"devices.d0.profile"}
    too_long, unknown = sorted(p.message for p in problems)
    assert too_long.startswith("String should have at most 64 characters")
    assert unknown.startswith(f"unknown profile '{long}'")
