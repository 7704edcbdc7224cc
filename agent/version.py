"""``smartpole --version``: what runs here, for a technician's report or a support call.

The package version has one source, ``pyproject.toml``, read back from the installed
package's metadata. With a pole config (given, or the service's ``/etc/smartpole/pole.yaml``
when it exists) it adds the config's hash and each profile it uses with its hash: profiles
carry no version field, and a hash tells two copies apart where a version number would
have to be kept up to date by hand. The hashes are SHA-256 of the files' bytes, the first
12 hex digits, so ``sha256sum`` on the box gives the same prefix.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from smartpole.agent.core.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/smartpole/pole.yaml")
HASH_DIGITS = 12


def package_version() -> str:
    try:
        return metadata.version("smartpole")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:HASH_DIGITS]


def version_text(config: Path | None) -> str:
    """The lines ``--version`` prints; a config that cannot be read or loaded is said so in
    its line, never a failure: the version is what was asked for."""
    lines = [f"smartpole {package_version()}"]
    if config is None:
        if not DEFAULT_CONFIG.is_file():
            return lines[0]
        config = DEFAULT_CONFIG
    try:
        lines.append(f"config {config} sha256:{file_hash(config)}")
    except OSError as exc:
        lines.append(f"config {config}: cannot read ({exc.strerror or exc})")
        return "\n".join(lines)
    from smartpole.agent.buses.registry import load_config

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        lines.append(f"  profiles: not listed, the config is invalid ({exc}; see config check)")
        return "\n".join(lines)
    for name in sorted(loaded.profiles):
        path = loaded.profile_files[name]  # the folder of profiles_dir that won
        try:
            lines.append(f"  profile {name} sha256:{file_hash(path)} {path}")
        except OSError as exc:
            lines.append(f"  profile {name}: cannot read ({exc.strerror or exc})")
    return "\n".join(lines)
