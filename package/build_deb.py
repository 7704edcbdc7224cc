"""Build ``dist/smartpole_<version>_<arch>.deb`` for amd64 or arm64 from any machine.

Nothing is compiled for the target: the package carries the project's pure-Python wheel and
the locked runtime dependencies as wheels downloaded for the target's platform tags
(``pip download --platform``), and its postinst builds the venv offline on the pole. So an
x86 developer machine builds the arm64 package without emulation. The layout is the one
``docs/operations.md`` describes (``/opt/smartpole/releases/<V>/`` ...).

Run with the dev venv's Python (``make package ARCH=arm64``); it needs pip, setuptools and
``dpkg-deb``. ``--version`` builds the same tree under another version (upgrade tests).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# pip's platform tag for each Debian architecture.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
# Debian bookworm's glibc: every manylinux_2_N wheel with N up to this runs there.
GLIBC_MINOR = 36
PYTHON = "3.11"
MODEL = "yolox-nano-coco-416.onnx"
MODEL_SHA256 = "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd"
# Kept out of the copy the wheel is built from (build droppings, Numba caches).
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", "*.egg-info")
SCRIPTS = ("preinst", "postinst", "prerm", "postrm")
CONFFILES = ("/etc/smartpole/pole.yaml", "/etc/smartpole/profiles.d/README")


class BuildError(Exception):
    """A reason the package cannot be built, said in one line."""


@dataclass(frozen=True)
class Project:
    """What the build reads from the source tree's pyproject.toml."""

    name: str
    version: str
    folders: tuple[str, ...]  # the source folders the wheel is made of
    readme: str


def read_project(source: Path) -> Project:
    try:
        data = tomllib.loads((source / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{source}/pyproject.toml: {exc}") from exc
    project = data["project"]
    folders = tuple(data["tool"]["setuptools"]["package-dir"].values())
    return Project(project["name"], project["version"], folders, project.get("readme", ""))


def check_version(version: str) -> str:
    """The pyproject version doubles as the Debian version, so only forms that sort the same
    in pip and in dpkg are accepted: dpkg puts ``1.0rc1`` after ``1.0``, pip before it."""
    try:
        parsed = Version(version)
    except InvalidVersion as exc:
        raise BuildError(f"version {version!r} is not a PEP 440 version") from exc
    if str(parsed) != version:
        raise BuildError(f"version {version!r}: write it in its normal form {parsed}")
    if parsed.is_prerelease or parsed.local is not None or parsed.epoch:
        raise BuildError(
            f"version {version!r}: pre-releases, local versions and epochs sort differently "
            "in dpkg than in pip; use a final release number such as 1.2.3 or 1.2.3.post1"
        )
    return version


def copy_source(source: Path, project: Project, dest: Path, version: str | None) -> None:
    """Only what the wheel is built from, so a checkout's build/ and caches stay out of it."""
    dest.mkdir(parents=True)
    shutil.copy2(source / "pyproject.toml", dest)
    if project.readme:
        shutil.copy2(source / project.readme, dest)
    for folder in project.folders:
        shutil.copytree(source / folder, dest / folder, ignore=COPY_IGNORE)
    if version is None:
        return
    text = (dest / "pyproject.toml").read_text()
    header = text.index("[project]")
    match = re.compile(r'^version\s*=\s*"[^"]*"\s*$', re.M).search(text, header)
    if match is None:
        raise BuildError("no 'version = \"...\"' line under [project] in pyproject.toml")
    text = f'{text[: match.start()]}version = "{version}"{text[match.end() :]}'
    (dest / "pyproject.toml").write_text(text)
    if tomllib.loads(text)["project"]["version"] != version:
        raise BuildError("rewriting the version in pyproject.toml's copy did not take")


def run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def build_wheel(src: Path, out: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    run([*pip, "--no-build-isolation", str(src)], "building the project wheel")
    (wheel,) = out.glob("*.whl")
    return wheel


def platforms(arch: str) -> list[str]:
    """Every manylinux tag a Debian bookworm (glibc 2.36) machine of ``arch`` accepts, best
    first. pip does not expand ``manylinux_2_N`` to older N itself, so all are listed."""
    machine = MACHINES[arch]
    lowest = 5 if machine == "x86_64" else 17
    tags = [f"manylinux_2_{n}_{machine}" for n in range(GLIBC_MINOR, lowest - 1, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine == "x86_64":
        tags += [f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return tags


def download(wheel: Path, lock: Path, arch: str, dest: Path, find_links: Path | None) -> None:
    argv = [sys.executable, "-m", "pip", "download", "--quiet", str(wheel), "-c", str(lock)]
    argv += ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp"]
    argv += ["--abi", "cp" + PYTHON.replace(".", ""), "-d", str(dest)]
    for tag in platforms(arch):
        argv += ["--platform", tag]
    if find_links is not None:  # offline, from the cache only
        argv += ["--no-index", "--find-links", str(find_links)]
    run(argv, f"downloading the {arch} dependency wheels")


def fill_wheelhouse(wheel: Path, lock: Path, arch: str, house: Path, cache: Path) -> bool:
    """The project wheel and its locked runtime closure for ``arch`` in ``house``; True when
    the cache alone had them (a warm build needs no network)."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        download(wheel, lock, arch, house, find_links=cache)
        return True
    except BuildError:
        shutil.rmtree(house, ignore_errors=True)
    download(wheel, lock, arch, cache, find_links=None)
    (cache / wheel.name).unlink(missing_ok=True)  # the cache holds dependencies only
    download(wheel, lock, arch, house, find_links=cache)
    return False


def read_lock(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[canonicalize_name(name)] = version.strip()
    return pins


def pinned(house: Path, lock: Path, project: str) -> list[str]:
    """``name==version`` for every wheel; each dependency must be the lock's exact pin (pip's
    ``-c`` leaves a dependency missing from the lock free to float)."""
    pins = read_lock(lock)
    lines, wrong = [], []
    for whl in sorted(house.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(whl.name)
        lines.append(f"{name}=={version}")
        if name != canonicalize_name(project) and pins.get(name) != str(version):
            wrong.append(f"{name} {version} (requirements.lock: {pins.get(name, 'not pinned')})")
    if wrong:
        raise BuildError("wheels not pinned by requirements.lock: " + ", ".join(wrong))
    return lines


def find_model(source: Path, given: Path | None) -> Path:
    """The detector ships with the product: the repository carries it as package data of
    ``smartpole.models`` (``models/assets/``, with its licence notice and provenance), so the
    wheel holds it; ``--model`` names another copy of the same file. Either way its sha256
    must be the one the package was tested with."""
    path = given or source / "models" / "assets" / MODEL
    if not path.is_file():
        raise BuildError(f"model {MODEL} not found at {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_SHA256:
        raise BuildError(f"{path}: sha256 {digest}, expected {MODEL_SHA256}")
    return path


def installed_kib(root: Path) -> int:
    """As dpkg-gencontrol counts: each file's size rounded up to KiB, 1 per other entry."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += -(-path.stat().st_size // 1024)
        else:
            total += 1
    return total


def unpacked_kib(house: Path) -> int:
    """What the wheels take once installed (before bytecode), from their zip directories."""
    size = 0
    for whl in house.glob("*.whl"):
        with zipfile.ZipFile(whl) as archive:
            size += sum(info.file_size for info in archive.infolist())
    return size // 1024


def put(src: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def link(dest: Path, target: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(target)


def substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    if leftover := re.findall(r"@[A-Z_]+@", text):
        raise BuildError(f"unknown placeholders {sorted(set(leftover))}")
    return text


def lay_out(root: Path, source: Path, house: Path, pins: list[str], version: str) -> None:
    rel = root / "opt/smartpole/releases" / version
    for whl in sorted(house.glob("*.whl")):
        put(whl, rel / "wheelhouse" / whl.name)
    header = f"# smartpole {version}: the exact set the release's venv is built from\n"
    (rel / "requirements.txt").write_text(header + "\n".join(pins) + "\n")
    tool = source / "package" / "smartpole_release.py"
    if not tool.is_file():
        raise BuildError(f"{tool} is missing")
    # The switcher (and its own stdlib-only modules, imported from beside it) in the release
    # folder, and again where an upgrade cannot take it away: dpkg deletes the old release's
    # packaged files when it unpacks the new one, so after a rollback `current` holds a venv
    # but no switcher, and a link through `current` would dangle.
    modules = sorted(tool.parent.glob("smartpole_release_*.py"))
    for folder in (rel, root / "usr/lib/smartpole"):
        put(tool, folder / "smartpole-release", 0o755)
        for module in modules:
            put(module, folder / module.name)
    link(root / "usr/bin/smartpole", "/opt/smartpole/current/bin/smartpole")
    link(root / "usr/sbin/smartpole-release", "/usr/lib/smartpole/smartpole-release")
    put(source / "configs/systemd/smartpole.service", root / "lib/systemd/system/smartpole.service")
    for profile in sorted((source / "configs/profiles").glob("*.yaml")):
        put(profile, root / "usr/share/smartpole/profiles" / profile.name)
    put(source / "package/pole.yaml.template", root / "etc/smartpole/pole.yaml")
    put(source / "package/profiles.d.README", root / "etc/smartpole/profiles.d/README")
    put(source / "package/copyright", root / "usr/share/doc/smartpole/copyright")


def write_control(root: Path, source: Path, arch: str, version: str, need_kib: int) -> None:
    debian = root / "DEBIAN"
    debian.mkdir(mode=0o755)
    kib = str(need_kib)
    values = {"VERSION": version, "ARCH": arch, "NEED_KIB": kib, "INSTALLED_SIZE": kib}
    for script in SCRIPTS:
        text = (source / "package/debian" / script).read_text()
        (debian / script).write_text(substitute(text, values))
        (debian / script).chmod(0o755)
    (debian / "conffiles").write_text("\n".join(CONFFILES) + "\n")
    control = (source / "package/debian/control").read_text()
    (debian / "control").write_text(substitute(control, values))


def build(args: argparse.Namespace) -> Path:
    source: Path = args.source.resolve()
    project = read_project(source)
    version = check_version(args.version or project.version)
    lock = source / "requirements.lock"
    model = find_model(source, args.model)
    with tempfile.TemporaryDirectory(prefix="smartpole-deb-") as tmp:
        work = Path(tmp)
        copy_source(source, project, work / "src", args.version)
        wheel = build_wheel(work / "src", work / "dist")
        house = work / "wheelhouse"
        warm = fill_wheelhouse(wheel, lock, args.arch, house, args.wheel_cache)
        print(f"build_deb: {args.arch} wheels from {'cache' if warm else 'the index'}")
        pins = pinned(house, lock, project.name)
        root = work / "root"
        lay_out(root, source, house, pins, version)
        # Also where configs written before the model shipped in the wheel name it (and
        # where an operator finds it): the same, checked file.
        put(model, root / "usr/share/smartpole/models" / MODEL)
        # Free space an install needs: the package's files, then the venv (the unpacked
        # wheels, their bytecode, about a third more, and pip); preinst checks it before
        # dpkg unpacks anything, and it is the control file's Installed-Size.
        need = installed_kib(root) + unpacked_kib(house) * 4 // 3 + 20 * 1024
        write_control(root, source, args.arch, version, need)
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        deb = out / f"{project.name}_{version}_{args.arch}.deb"
        part = deb.with_name(f".{deb.name}.part")
        dpkg = ["dpkg-deb", "--root-owner-group", f"-Z{args.compress}", "--build"]
        try:
            run([*dpkg, str(root), str(part)], "dpkg-deb")
        except BuildError:
            part.unlink(missing_ok=True)  # never leave half a package beside whole ones
            raise
        part.replace(deb)
    return deb


def default_cache(arch: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smartpole" / "wheels" / arch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(MACHINES), default="amd64")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--source", type=Path, default=REPO, help="tree whose pyproject is built")
    parser.add_argument("--version", help="build under this version instead of pyproject's")
    parser.add_argument("--wheel-cache", type=Path, help="default ~/.cache/smartpole/wheels/ARCH")
    parser.add_argument("--model", type=Path, help=f"the {MODEL} to ship")
    parser.add_argument("--compress", choices=("gzip", "xz", "none"), default="gzip")
    args = parser.parse_args(argv)
    args.wheel_cache = args.wheel_cache or default_cache(args.arch)
    started = time.monotonic()
    try:
        deb = build(args)
    except BuildError as exc:
        print(f"build_deb: {exc}", file=sys.stderr)
        return 1
    size = deb.stat().st_size / 2**20
    print(f"build_deb: {deb} ({size:.1f} MiB) in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
