"""``package/build_deb.py``: the .deb for amd64 and arm64, built here on x86 without emulation.

Both packages are built once per module (the dependency wheels come from the user's wheel
cache after the first run, uncompressed to save time), then taken apart with ``dpkg-deb``.
The checks do not reuse the builder's code: the platform tags a Debian bookworm machine
accepts, the runtime closure and the pins are worked out here again, from ``packaging`` and
the dev venv's installed metadata.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from helpers.packages import Deb, Packages
from helpers.paths import REPO

BUILD = REPO / "package" / "build_deb.py"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
SCRIPTS = ("preinst", "postinst", "prerm", "postrm")
# Development and benchmark tools: none may reach a pole.
DEV_ONLY = {"pytest", "mypy", "ruff", "hypothesis", "opencv-python-headless", "import-linter"}
SMARTPOLE = str(Path(sys.executable).with_name("smartpole"))
# The first test builds the session's packages (tests/package/conftest.py): minutes when cold.
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Unpacked:
    """A built package taken apart: its files and its control archive."""

    arch: str
    path: Path
    version: str
    tree: Path  # dpkg-deb -x
    control: Path  # dpkg-deb -e

    @property
    def release(self) -> Path:
        return self.tree / "opt/smartpole/releases" / self.version

    def wheels(self) -> list[str]:
        return sorted(p.name for p in (self.release / "wheelhouse").glob("*.whl"))

    def field(self, name: str) -> str:
        return dpkg_deb("--field", str(self.path), name).strip()


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def build(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(BUILD), "--out", str(out), "--compress", "none", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=540)


def unpack(deb: Deb, where: Path) -> Unpacked:
    tree, control = where / "tree", where / "control"
    subprocess.run(["dpkg-deb", "-x", str(deb.path), str(tree)], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb.path), str(control)], check=True)
    return Unpacked(deb.arch, deb.path, deb.version, tree, control)


@pytest.fixture(scope="module")
def debs(packages: Packages, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Unpacked]:
    """The session's amd64 and arm64 packages (tests/package/conftest.py), taken apart."""
    built = {"amd64": packages.amd64, "arm64": packages.arm64}
    return {arch: unpack(deb, tmp_path_factory.mktemp(arch)) for arch, deb in built.items()}


# --- which wheels a Debian bookworm machine (CPython 3.11, glibc 2.36) installs


def accepted_tags(arch: str) -> set[Tag]:
    machine = MACHINE[arch]
    lowest = 5 if machine == "x86_64" else 17
    platforms = [f"manylinux_2_{n}_{machine}" for n in range(36, lowest - 1, -1)]
    legacy = {"x86_64": ["manylinux2014", "manylinux2010", "manylinux1"]}
    platforms += [f"{name}_{machine}" for name in legacy.get(machine, ["manylinux2014"])]
    tags = set(cpython_tags((3, 11), ["cp311"], platforms))
    return tags | set(compatible_tags((3, 11), "cp311", platforms))


def not_installable(wheels: list[str], arch: str) -> list[str]:
    accepted = accepted_tags(arch)
    return [w for w in wheels if not parse_wheel_filename(w)[3] & accepted]


@pytest.mark.parametrize("arch", sorted(MACHINE))
def test_every_wheel_installs_on_the_target(debs: dict[str, Unpacked], arch: str) -> None:
    wheels = debs[arch].wheels()
    assert len(wheels) > 10
    assert not_installable(wheels, arch) == []


def test_the_tag_check_refuses_the_other_architectures_wheels(debs: dict[str, Unpacked]) -> None:
    """The check above can fail: each binary wheel of one package is refused for the other."""
    for arch, other in (("amd64", "arm64"), ("arm64", "amd64")):
        wheels = debs[other].wheels()
        binary = [w for w in wheels if not w.endswith("-none-any.whl")]
        assert {"av", "numpy", "onnxruntime", "llvmlite"} <= {wheel_name(w) for w in binary}
        assert not_installable(wheels, arch) == binary
    assert not_installable(["numpy-2.4.6-cp312-cp312-manylinux_2_17_aarch64.whl"], "arm64")
    assert not_installable(["x-1-cp311-cp311-manylinux_2_38_aarch64.whl"], "arm64")  # glibc


# --- exactly the locked runtime closure


def wheel_name(wheel: str) -> str:
    return str(parse_wheel_filename(wheel)[0])


def runtime_closure(arch: str) -> set[str]:
    """smartpole's dependencies and theirs, no extras, markers taken for the target."""
    env = {**default_environment(), "platform_machine": MACHINE[arch], "python_version": "3.11"}
    env |= {"sys_platform": "linux", "platform_system": "Linux", "extra": ""}
    found: set[str] = set()
    todo = ["smartpole"]
    while todo:
        for text in metadata.requires(todo.pop()) or []:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if (req.marker is None or req.marker.evaluate(env)) and name not in found:
                found.add(name)
                todo.append(name)
    return found


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("arch", sorted(MACHINE))
def test_the_wheelhouse_is_the_locked_runtime_closure(debs: dict[str, Unpacked], arch: str) -> None:
    deb = debs[arch]
    found = {wheel_name(w): str(parse_wheel_filename(w)[1]) for w in deb.wheels()}
    assert found.pop("smartpole") == VERSION
    assert set(found) == runtime_closure(arch)
    pins = lock_pins()
    assert found == {name: pins[name] for name in found}
    assert not DEV_ONLY & set(found)
    listed = (deb.release / "requirements.txt").read_text().splitlines()
    assert sorted(line for line in listed if "==" in line) == sorted(
        f"{name}=={version}" for name, version in {**found, "smartpole": VERSION}.items()
    )


# --- the Debian package itself


def test_the_control_file(debs: dict[str, Unpacked]) -> None:
    for arch, deb in debs.items():
        assert deb.field("Package") == "smartpole"
        assert deb.field("Version") == VERSION
        assert deb.field("Architecture") == arch
        depends = deb.field("Depends")
        assert "python3.11" in depends
        assert "python3.11-venv" in depends
        wheelhouse_kib = sum(p.stat().st_size for p in deb.release.rglob("*")) // 1024
        # the files plus the venv the postinst builds (several times the wheels' size)
        assert int(deb.field("Installed-Size")) > 3 * wheelhouse_kib
        conffiles = (deb.control / "conffiles").read_text().split()
        assert conffiles == ["/etc/smartpole/pole.yaml", "/etc/smartpole/profiles.d/README"]


def test_the_layout(debs: dict[str, Unpacked]) -> None:
    deb = debs["arm64"]
    contents = dpkg_deb("--contents", str(deb.path))
    modules = sorted(p.name for p in (REPO / "package").glob("smartpole_release_*.py"))
    assert modules, "the switcher's own modules"
    assert "./usr/bin/smartpole -> /opt/smartpole/current/bin/smartpole" in contents
    # not through `current`: after a rollback that release's packaged files are gone
    assert "./usr/sbin/smartpole-release -> /usr/lib/smartpole/smartpole-release" in contents
    for folder in (deb.release, deb.tree / "usr/lib/smartpole"):
        for name in ("smartpole-release", *modules):
            source = "smartpole_release.py" if name == "smartpole-release" else name
            assert (folder / name).read_bytes() == (REPO / "package" / source).read_bytes()
    assert re.search(
        rf"-rwxr-xr-x root/root .* ./opt/smartpole/releases/{VERSION}/smartpole-r", contents
    )
    unit = deb.tree / "lib/systemd/system/smartpole.service"
    assert unit.read_bytes() == (REPO / "configs/systemd/smartpole.service").read_bytes()
    profiles = deb.tree / "usr/share/smartpole/profiles"
    shipped = sorted(p.name for p in (REPO / "configs/profiles").glob("*.yaml"))
    assert sorted(p.name for p in profiles.iterdir()) == shipped
    model = deb.tree / "usr/share/smartpole/models/yolox-nano-coco-416.onnx"
    assert hashlib.sha256(model.read_bytes()).hexdigest().startswith("e8af074932d4")
    # The repository's copy, which the project wheel also carries with its notice.
    assets = REPO / "models" / "assets"
    assert model.read_bytes() == (assets / "yolox-nano-coco-416.onnx").read_bytes()
    (wheel,) = (deb.release / "wheelhouse").glob("smartpole-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in ("yolox-nano-coco-416.onnx", "NOTICE", "LICENSE-Apache-2.0.txt"):
            packed = archive.read(f"smartpole/models/assets/{name}")
            assert packed == (assets / name).read_bytes(), name
    assert (deb.tree / "etc/smartpole/profiles.d/README").is_file()
    # Only what is listed: nothing of the venv (built at install), no state, no secrets.
    top = {str(p.relative_to(deb.tree)) for p in deb.tree.glob("*/*")}
    assert top == {
        "etc/smartpole",
        "lib/systemd",
        "opt/smartpole",
        "usr/bin",
        "usr/lib",
        "usr/sbin",
        "usr/share",
    }
    assert sorted(p.name for p in deb.release.iterdir()) == sorted(
        ["requirements.txt", "smartpole-release", "wheelhouse", *modules]
    )


def test_the_maintainer_scripts_are_valid_posix_sh(debs: dict[str, Unpacked]) -> None:
    for deb in debs.values():
        for script in SCRIPTS:
            path = deb.control / script
            assert os.access(path, os.X_OK)
            text = path.read_text()
            assert text.startswith("#!/bin/sh\n")
            assert "\nset -e\n" in text
            assert "@" not in text.replace("$@", ""), f"{script}: a placeholder is left"
            subprocess.run(["sh", "-n", str(path)], check=True)
            subprocess.run(["shellcheck", "-s", "sh", str(path)], check=True)


def fake_df(tmp_path: Path, avail_kib: int) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    df = bin_dir / "df"
    df.write_text(
        "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"echo '/dev/sda1 99999999 1 {avail_kib} 1% /'\n"
    )
    df.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_preinst_refuses_a_disk_too_small_for_the_venv(
    debs: dict[str, Unpacked], tmp_path: Path
) -> None:
    preinst = debs["amd64"].control / "preinst"
    need = int(debs["amd64"].field("Installed-Size"))
    small = subprocess.run(
        [str(preinst), "install"], env=fake_df(tmp_path, need - 1), capture_output=True, text=True
    )
    assert small.returncode == 1
    assert "not enough free space for release" in small.stderr
    assert f"{need // 1024} MiB needed" in small.stderr
    enough = subprocess.run(
        [str(preinst), "install"], env=fake_df(tmp_path, need), capture_output=True, text=True
    )
    assert enough.returncode == 0, enough.stderr


# --- build options


def test_version_override_builds_the_same_tree_under_another_version(
    packages: Packages, tmp_path: Path
) -> None:
    newer = unpack(packages.amd64_newer, tmp_path)
    assert newer.version == f"{VERSION}.post1"
    assert newer.field("Version") == newer.version
    assert (newer.release / f"wheelhouse/smartpole-{newer.version}-py3-none-any.whl").is_file()
    pins = (newer.release / "requirements.txt").read_text().splitlines()
    assert f"smartpole=={newer.version}" in pins
    assert f"V={newer.version}\n" in (newer.control / "postinst").read_text()
    # the checkout itself is untouched
    assert f'version = "{VERSION}"' in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize("version", ["1.0rc1", "1.0+local", "1!2.0", "01.0", "not-a-version"])
def test_versions_that_dpkg_would_sort_differently_are_refused(
    tmp_path: Path, version: str
) -> None:
    proc = build(tmp_path, "--version", version)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"build_deb: version {version!r}")
    assert not list(tmp_path.iterdir())


# --- the config template


def test_the_template_fails_its_check_and_says_what_to_do() -> None:
    proc = subprocess.run(
        [SMARTPOLE, "config", "check", str(REPO / "package/pole.yaml.template")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "holds no settings, only comments: fill in at least pole:, buses:" in proc.stderr


def test_the_templates_examples_make_a_valid_config(tmp_path: Path) -> None:
    """Each example line loses its one "#" and the result passes the check: the template
    teaches nothing that the loader refuses."""
    lines = (REPO / "package/pole.yaml.template").read_text().splitlines(keepends=True)
    text = "".join(line[1:] if re.match(r"#(?! |$)|#  ", line) else line for line in lines)
    installed = "[/etc/smartpole/profiles.d, /usr/share/smartpole/profiles]"
    assert installed in text
    config = tmp_path / "pole.yaml"
    config.write_text(text.replace(installed, str(REPO / "configs/profiles")))
    proc = subprocess.run(
        [SMARTPOLE, "config", "check", str(config)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK - pole pole-0001" in proc.stdout


def test_the_model_must_be_the_shipped_one(tmp_path: Path) -> None:
    wrong = tmp_path / "model.onnx"
    wrong.write_bytes(b"not the detector")
    proc = build(tmp_path / "out", "--model", str(wrong))
    assert proc.returncode == 1
    assert "sha256" in proc.stderr
    assert not (tmp_path / "out").exists()
