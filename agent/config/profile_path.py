"""Where device profiles are found: ``profiles_dir`` is one folder or a list of folders,
searched in order, the first holding ``<name>.yaml`` wins.

An installed pole lists the site's own folder before the shipped one
(``[/etc/smartpole/profiles.d, /usr/share/smartpole/profiles]``), so a site can change a
shipped profile by copying it under the same name, and an upgrade that ships a new version
of it does not undo the site's copy. Every place that names or shows a profile (the config
check, ``--version``, ``diag scan --profile``) goes through here, so they agree on which
file a name means.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: ``profiles_dir`` when the config does not say: beside the config's own folder.
DEFAULT = "../profiles"


@dataclass(frozen=True)
class ProfilePath:
    """The folders searched, in order, each absolute (relative ones are taken from the
    config file's folder, not from the working directory)."""

    folders: tuple[Path, ...]

    @classmethod
    def of(cls, value: str | Sequence[str], config: Path) -> ProfilePath:
        names = [value] if isinstance(value, str) else list(value)
        return cls(tuple(Path(os.path.normpath(config.parent / name)) for name in names))

    def missing(self) -> list[tuple[int, str]]:
        """The folders that are not folders: their place in the list, and why."""
        out = []
        for index, folder in enumerate(self.folders):
            try:
                if folder.is_dir():
                    continue
                out.append((index, f"no profiles folder {folder}"))
            except (OSError, ValueError) as exc:  # a name too long, a NUL byte ...
                out.append((index, f"cannot use profiles folder {folder}: {_reason(exc)}"))
        return out

    def find(self, name: str) -> Path | None:
        """The file ``name`` means: in the first folder that has it (a FIFO or device
        counts, so the profile loader can say what it is). A name the file system cannot
        take (too long) is in no folder."""
        for folder in self.folders:
            file = folder / f"{name}.yaml"
            try:
                if file.exists():
                    return file
            except (OSError, ValueError):
                continue
        return None

    def known(self) -> list[str]:
        """Every profile name any folder offers, for an unknown name's message."""
        return sorted({p.stem for folder in self.folders for p in folder.glob("*.yaml")})

    def describe(self) -> str:
        return ", ".join(str(f) for f in self.folders)

    def unknown(self, name: str) -> str:
        """The message for a name no folder has: every folder searched, and what exists."""
        known = ", ".join(self.known()) or "none"
        if len(self.folders) == 1:
            where = f"no {self.folders[0] / f'{name}.yaml'}"
        else:
            where = f"no {name}.yaml in any of {self.describe()}"
        return f"unknown profile {name!r}: {where}; known: {known}"


def profile_sources(files: Mapping[str, Path]) -> str:
    """Which folder each profile came from, grouped by folder:
    ``a, c from /etc/smartpole/profiles.d; b from /usr/share/smartpole/profiles``."""
    by_folder: dict[Path, list[str]] = {}
    for name in sorted(files):
        by_folder.setdefault(files[name].parent, []).append(name)
    return "; ".join(f"{', '.join(names)} from {folder}" for folder, names in by_folder.items())


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
