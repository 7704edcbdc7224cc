"""``smartpole keys``: write a command key file, and rotate one.

A key file is easy to get subtly wrong by hand (a short key, a key readable by everybody, an
editor's half-written file picked up by the running daemon, a key overwritten while the
platform still signs with it), so the pole ships the tool that writes one: 32 random bytes
as 64 hex characters and a newline, mode 0600, written to a temporary file, flushed to disk
and then moved into place, so the daemon (which re-reads the file when it changes) sees
either the old key or the new one, never a part. The HMAC key is the file's bytes without
surrounding whitespace (``command_auth.key_from_file_bytes``): the 64 ASCII characters,
not the 32 bytes they spell.

``keys rotate`` keeps the old key valid while the platform switches: it copies the current
key to the previous-key file (``uplink.commands.previous_hmac_key_file``) first, then
replaces the current one; removing the previous-key file ends the overlap.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
from pathlib import Path

from smartpole.agent.config.command_limits import MIN_KEY_BYTES
from smartpole.agent.core.errors import AgentError, UsageError
from smartpole.agent.uplink.command_auth import MAX_KEY_FILE_BYTES, key_from_file_bytes

KEY_RANDOM_BYTES = 32  # HMAC-SHA256's block is 64 bytes; 256 random bits is its strength
KEY_MODE = 0o600


def new_key_text() -> bytes:
    return secrets.token_hex(KEY_RANDOM_BYTES).encode() + b"\n"


def write_key_file(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600; refuse to replace an existing
    file unless ``force`` (``UsageError``). OS failures raise ``AgentError``."""
    folder = path.parent
    temporary = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    except OSError as exc:
        raise AgentError(f"cannot write in {folder}: {exc.strerror or exc}") from exc
    try:
        try:
            os.fchmod(fd, KEY_MODE)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            temporary.replace(path)
        else:
            _link_new(temporary, path)
        _sync_folder(folder)
    except OSError as exc:
        raise AgentError(f"cannot write the key file {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _link_new(temporary: Path, path: Path) -> None:
    """Move ``temporary`` to ``path`` only if nothing is there: a hard link fails if the
    name exists, with no window in which a second writer could slip in between."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise UsageError(f"{path} exists; --force replaces it") from None


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    """A key file's bytes, checked as the daemon checks them."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise AgentError(f"cannot read the key file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_FILE_BYTES or len(key_from_file_bytes(data)) < MIN_KEY_BYTES:
        raise UsageError(f"{path} holds no usable key (at least {MIN_KEY_BYTES} bytes)")
    return data


def cmd_new(args: argparse.Namespace) -> int:
    write_key_file(args.path, new_key_text(), force=args.force)
    print(
        f"{args.path}: a new command key (64 hex characters, mode 0600); give the "
        "platform the same file, its bytes without the newline are the HMAC key"
    )
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    current = read_key_file(args.path)
    write_key_file(args.previous, current, force=args.force)
    write_key_file(args.path, new_key_text(), force=True)
    print(
        f"{args.path}: a new command key; the old one is in {args.previous} and stays "
        "valid while that file exists (uplink.commands.previous_hmac_key_file). Remove it "
        "once the platform signs with the new key."
    )
    return 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    keys = sub.add_parser("keys", help="command key files (uplink.commands.hmac_key_file)")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = actions.add_parser(
        "new", parents=[common], help="write a new random key file (mode 0600, atomically)"
    )
    new.add_argument("path", type=Path)
    new.add_argument("--force", action="store_true", help="replace an existing file")
    new.set_defaults(handler=cmd_new)
    rotate = actions.add_parser(
        "rotate",
        parents=[common],
        help="keep the current key as PREVIOUS and write a new one to PATH",
    )
    rotate.add_argument("path", type=Path, help="the current key file (hmac_key_file)")
    rotate.add_argument("previous", type=Path, help="previous_hmac_key_file")
    rotate.add_argument("--force", action="store_true", help="replace an existing PREVIOUS")
    rotate.set_defaults(handler=cmd_rotate)
