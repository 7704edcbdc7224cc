"""``smartpole diag bundle``: one ``.tar.gz`` a technician sends back from a pole.

It holds what a support call asks for first: versions, the config with its secrets taken
out, every ``diag`` view, the learnt read plans, outbox statistics, the last audit records,
the last journal lines, the unit's state and the machine's basics, and ``manifest.json``
saying what is in it and what could not be had, and why. It is made whether or not the
daemon runs: a pole whose daemon fails is when the bundle is needed most, so every part
is gathered on its own and a part that fails is a line in the manifest.

No secret may leave in it: secrets are removed by structure (:mod:`.redact`), and then
every member's bytes are searched for the pole's actual secret values
(:mod:`.secret_scan`), which are replaced, or the member withheld. Secret files are
never copied, and nothing under a ``secrets/`` folder. The archive and its members are
mode 0600: it still shows how the pole is built and run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import secrets
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final

import yaml

from smartpole.agent.config.safefile import MAX_CONFIG_BYTES, read_small_file
from smartpole.agent.core.errors import UsageError
from smartpole.agent.technician import bundle_host, bundle_state
from smartpole.agent.technician.diag_commands import add_diag_commands
from smartpole.agent.technician.redact import redact_text, redact_tree
from smartpole.agent.technician.secret_scan import KnownSecrets, known_secrets

COMMAND: Final = "bundle"
DEFAULT_CONFIG: Final = Path("/etc/smartpole/pole.yaml")
DEFAULT_JOURNAL_LINES: Final = 2000
DEFAULT_AUDIT_COUNT: Final = 200
MEMBER_MODE: Final = 0o600
FORMAT_VERSION: Final = 1
#: Options only ``diag bundle`` takes, by dest.
OPTIONS: Final = ("output", "journal_lines", "audit_count")
_SAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Collector:
    """The members gathered so far, with the manifest's failures and notes."""

    members: dict[str, bytes] = field(default_factory=dict)
    failed: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)

    def add(self, name: str, data: bytes | str | object) -> None:
        """Text is cleaned as free text; anything else is a JSON tree whose strings are
        cleaned (URL user information, PEM blocks)."""
        if isinstance(data, bytes):
            self.members[name] = data
        elif isinstance(data, str):
            self.members[name] = redact_text(data).encode()
        else:
            cleaned = redact_tree(data, by_name=False)
            text = json.dumps(cleaned, indent=2, ensure_ascii=False, default=str)
            self.members[name] = (text + "\n").encode()

    def fail(self, item: str, reason: str) -> None:
        self.failed.append({"item": item, "reason": reason})

    def note(self, item: str, text: str) -> None:
        self.notes.append({"item": item, "note": text})


@dataclass(frozen=True)
class Request:
    config: Path
    state_dir: Path
    socket: Path
    journal_lines: int = DEFAULT_JOURNAL_LINES
    audit_count: int = DEFAULT_AUDIT_COUNT


def gather(request: Request, version_text: Callable[[Path | None], str]) -> Collector:
    """Every member, cleaned and scanned, then the manifest; never raises for a part."""
    sink = Collector()
    tree = config_member(sink, request.config)
    known = known_secrets(tree, request.config.parent, request.state_dir)
    sink.add("version.txt", version_text(request.config) + "\n")
    sink.add("packages.json", _packages())
    status = bundle_state.daemon_views(sink, request.socket, request.audit_count)
    bundle_state.state_files(
        sink, request.state_dir, request.audit_count, from_daemon=status is not None
    )
    bundle_host.journal_and_unit(sink, request.journal_lines)
    sink.add("machine.json", bundle_host.machine(request.state_dir, request.config))
    safety = _scrub(sink, known)
    manifest = {
        "format": FORMAT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pole": pole_id(tree, status),
        "config": str(request.config),
        "state_dir": str(request.state_dir),
        "socket": str(request.socket),
        "daemon_answered": status is not None,
        "members": {name: len(data) for name, data in sorted(sink.members.items())},
        "failed": sink.failed,
        "notes": sink.notes,
        "secrets": safety,
    }
    sink.add("manifest.json", manifest)
    _scrub(sink, known, only="manifest.json")
    return sink


def config_member(sink: Collector, path: Path) -> object:
    """The config with secrets replaced, as ``config/pole.yaml``; the parsed tree (or the
    text, when it is no YAML) for the safety net."""
    try:
        raw = read_small_file(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        sink.fail(f"config {path}", exc.strerror or str(exc))
        return None
    text = raw.decode("utf-8", errors="replace")
    header = f"# {path}, secrets replaced by smartpole diag bundle"
    try:
        tree: object = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        sink.fail(f"config {path}", f"not valid YAML ({type(exc).__name__}): copied as text")
        sink.add("config/pole.yaml", f"{header}; not valid YAML, copied as text\n{text}")
        return text
    dumped = yaml.safe_dump(redact_tree(tree), sort_keys=False, allow_unicode=True)
    sink.add("config/pole.yaml", f"{header}; comments dropped\n{dumped}")
    return tree


def pole_id(tree: object, status: object) -> str:
    for source in (tree, status):
        if isinstance(source, dict):
            pole = source.get("pole")
            found = pole.get("id") if isinstance(pole, dict) else pole
            if isinstance(found, str) and found:
                return found
    return "unknown"


def _packages() -> dict[str, str]:
    """What is installed beside smartpole: a bug is often a dependency's version."""
    return dict(
        sorted((dist.metadata["Name"] or "?", dist.version) for dist in metadata.distributions())
    )


def _scrub(sink: Collector, known: KnownSecrets, only: str | None = None) -> dict[str, object]:
    """The safety net over every member (or one); what it found, for the manifest."""
    found: dict[str, int] = {}
    withheld: list[str] = []
    for name in [only] if only else list(sink.members):
        data, hits, left = known.scrub(sink.members[name])
        if left:
            withheld.append(name)
            data = b"withheld: a secret could not be removed from this member\n"
        if hits:
            found[name] = hits
        sink.members[name] = data
    return {
        "structural": "config keys named like password/secret/token/key/credential, URL "
        "user information, PEM blocks; secret files never read into the bundle",
        "values_searched": known.count,
        "values_too_short_to_search": known.too_short,
        "secret_files_unread": known.unread,
        "removed_by_value": found,
        "withheld": withheld,
    }


def default_name(pole: str, now: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"smartpole-bundle-{_SAFE_NAME.sub('_', pole)}-{stamp}"


class Output:
    """The archive's file: a temporary file beside the target, opened before anything is
    gathered (an unwritable path fails at once), linked into place at the end."""

    def __init__(self, path: Path | None) -> None:
        """``path`` None: a default name in the current folder, chosen at the end."""
        self.path = path
        folder = Path.cwd() if path is None else path.parent
        if path is not None and path.exists():
            raise UsageError(f"{path} exists; give another -o")
        self._temporary = folder / f".smartpole-bundle.{secrets.token_hex(4)}.tmp"
        where = path or folder
        try:
            self._fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot write the bundle to {where}: {exc.strerror or exc}") from exc
        os.fchmod(self._fd, 0o600)

    def write(self, prefix: str, members: dict[str, bytes], now: float) -> Path:
        """``manifest.json`` first, so ``tar tzf | head`` shows it; the path written."""
        path = self.path or self._temporary.parent / f"{prefix}.tar.gz"
        order = sorted(members, key=lambda name: (name != "manifest.json", name))
        fd, self._fd = self._fd, -1  # the file object below owns and closes it
        try:
            with os.fdopen(fd, "wb") as out:
                with tarfile.open(fileobj=out, mode="w:gz") as archive:
                    for name in order:
                        info = tarfile.TarInfo(f"{prefix}/{name}")
                        info.size = len(members[name])
                        info.mode = MEMBER_MODE
                        info.mtime = int(now)
                        archive.addfile(info, io.BytesIO(members[name]))
                out.flush()
                os.fsync(out.fileno())
            os.link(self._temporary, path)
        except FileExistsError:
            raise UsageError(f"{path} appeared while the bundle was made") from None
        except OSError as exc:
            raise UsageError(f"cannot write the bundle to {path}: {exc.strerror}") from exc
        finally:
            self.discard()
        return path

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._temporary.unlink()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def run(
    args: argparse.Namespace,
    *,
    socket: Path,
    state_dir: Path,
    version_text: Callable[[Path | None], str],
) -> int:
    if args.device is not None:
        raise UsageError(f"diag bundle takes options only, not {args.device!r}")
    now = time.time()
    config: Path = args.config or DEFAULT_CONFIG
    request = Request(config, state_dir, socket, args.journal_lines, args.audit_count)
    output = Output(args.output)
    try:
        collected = gather(request, version_text)
    except BaseException:
        output.discard()
        raise
    manifest = json.loads(collected.members["manifest.json"])
    written = output.write(default_name(str(manifest["pole"]), now), collected.members, now)
    print(f"wrote {written} ({len(collected.members)} files)")
    unasked = [f["item"] for f in collected.failed if f["reason"].startswith("not asked:")]
    for failure in collected.failed:
        if failure["item"] not in unasked:
            print(f"  not in it: {failure['item']}: {failure['reason']}")
    if unasked:
        print(f"  not asked, as the daemon did not answer: {', '.join(unasked)}")
    removed = manifest["secrets"]["removed_by_value"]
    if removed or manifest["secrets"]["withheld"]:
        print(f"  warning: secret values found and removed in {', '.join(removed)}")
    return 0


def add_command(
    diag: argparse.ArgumentParser,
    *,
    socket: Callable[[argparse.Namespace], Path],
    state_dir: Callable[[argparse.Namespace], Path],
    version_text: Callable[[Path | None], str],
) -> None:
    """Add ``bundle`` to the ``diag`` parser, after its handler (and ``diag scan``'s
    ``--config``, which the bundle reads too) are set."""

    def handler(args: argparse.Namespace) -> int:
        args.journal_lines = args.journal_lines or DEFAULT_JOURNAL_LINES
        args.audit_count = args.audit_count or DEFAULT_AUDIT_COUNT
        return run(args, socket=socket(args), state_dir=state_dir(args), version_text=version_text)

    group = add_diag_commands(
        diag,
        [COMMAND],
        options=[*OPTIONS, "config"],  # --config: diag scan's option, which the bundle reads
        run=handler,
        title="bundle",
        description="one .tar.gz for support; --config (default /etc/smartpole/pole.yaml)",
    )
    group.add_argument(
        "-o",
        "--output",
        type=Path,
        help="bundle: the archive to write (default smartpole-bundle-POLE-TIME.tar.gz here)",
    )
    group.add_argument(
        "--journal-lines",
        type=_positive,
        metavar="N",
        help=f"bundle: the unit's last N journal lines (default {DEFAULT_JOURNAL_LINES})",
    )
    group.add_argument(
        "--audit-count",
        type=_positive,
        metavar="N",
        help=f"bundle: the last N audit records (default {DEFAULT_AUDIT_COUNT})",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value
