"""The bundle's safety net: the pole's actual secret values, searched for in every member.

Structural redaction (:mod:`.redact`) knows where secrets usually are; this knows what they
are. The values come from what the config names: the files under secret-like keys
(``password_file``, ``hmac_key_file``, ``tls.key_file``, ``users_file`` ...), every file in
the ``secrets/`` folder beside the config, the user information of URLs and scalars under
secret-like keys. Each is looked for as written and in the forms it could take on the way
into a member: base64 (standard, URL-safe, unpadded), hex (both cases), percent-encoded
(a URL) and JSON-escaped; a PEM file also by each line of its body and by the key's DER
bytes. A hit is replaced by :data:`.redact.MARK` and reported (which member, how often;
never which secret); a member that still holds a secret after that (the secret is part of
the mark itself) is withheld whole.

Values are read here and kept only in memory, for the comparison.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from smartpole.agent.config.safefile import read_small_file
from smartpole.agent.technician.redact import MARK, SECRET_NAME, is_secret_name, urls_userinfo

#: Shorter values would match ordinary text everywhere; they are counted, not scanned.
MIN_SECRET_BYTES: Final = 4
SECRET_FILE_BYTES: Final = 1 << 16  # a key or password file; a certificate chain at most
SECRETS_DIR: Final = "secrets"
MAX_SECRETS_DIR_FILES: Final = 200
#: The OPC UA server's secret files by default, under the state folder
#: (``config/opcua.py``; the key's name is ``uplink/opcua_certs.KEY_NAME``).
OPCUA_USERS: Final = "opcua/users"
OPCUA_PKI: Final = "opcua/pki"
OPCUA_KEY: Final = "server_key.pem"
_PEM_LINE: Final = re.compile(rb"^-----(BEGIN|END) ")


@dataclass
class KnownSecrets:
    """The forms of every secret value found, longest first, and what could not be read."""

    unread: list[dict[str, str]] = field(default_factory=list)
    too_short: int = 0
    _values: set[bytes] = field(default_factory=set)

    @property
    def count(self) -> int:
        return len(self._values)

    def add(self, value: bytes) -> None:
        value = value.strip()
        if not value:
            return
        if len(value) < MIN_SECRET_BYTES:
            self.too_short += 1
            return
        self._values.add(value)

    def add_file(self, path: Path) -> None:
        """The file's content, its lines and, for PEM, its body and the DER bytes."""
        try:
            data = read_small_file(path, SECRET_FILE_BYTES)
        except FileNotFoundError:
            return  # named but absent (a previous key after the overlap): nothing to leak
        except OSError as exc:
            self.unread.append({"file": str(path), "reason": exc.strerror or str(exc)})
            return
        self.add(data)
        lines = [line.strip() for line in data.splitlines()]
        body = [line for line in lines if line and not _PEM_LINE.match(line)]
        for line in body:
            self.add(line)
        if len(body) < len(lines):  # PEM: the base64 body as one, and what it decodes to
            joined = b"".join(body)
            self.add(joined)
            with contextlib.suppress(binascii.Error, ValueError):
                self.add(base64.b64decode(joined, validate=False))

    def forms(self) -> list[bytes]:
        """Every searched form, longest first, so a longer form is replaced before a
        shorter one it contains."""
        out: set[bytes] = set()
        for value in self._values:
            out.update(f for f in _forms(value) if len(f) >= MIN_SECRET_BYTES)
        return sorted(out, key=lambda f: (-len(f), f))

    def scrub(self, data: bytes) -> tuple[bytes, int, bool]:
        """``data`` with every form replaced; how many were; whether any is left (the
        member must then be withheld)."""
        hits = 0
        forms = self.forms()
        for form in forms:
            found = data.count(form)
            if found:
                hits += found
                data = data.replace(form, MARK.encode())
        left = any(form in data for form in forms)
        return data, hits, left


def _forms(value: bytes) -> Iterator[bytes]:
    yield value
    yield base64.b64encode(value)
    yield base64.b64encode(value).rstrip(b"=")
    yield base64.urlsafe_b64encode(value).rstrip(b"=")
    yield value.hex().encode()
    yield value.hex().upper().encode()
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return
    yield urllib.parse.quote(text, safe="").encode()
    yield json.dumps(text)[1:-1].encode()
    yield json.dumps(text, ensure_ascii=False)[1:-1].encode()


def known_secrets(tree: object, config_dir: Path, state_dir: Path) -> KnownSecrets:
    """What the config at ``config_dir`` (parsed into ``tree``) points at or holds, and
    the OPC UA server's own secrets where they are by default (users and the server's
    private key, in the state folder, whether or not the config names them)."""
    found = KnownSecrets()
    _walk(tree, "", found, (config_dir, state_dir))
    opcua = tree.get("opcua") if isinstance(tree, Mapping) else None
    if isinstance(opcua, Mapping):
        users = opcua.get("users_file", OPCUA_USERS)
        pki = Path(str(opcua.get("certificate_dir") or OPCUA_PKI))
        for path in (None if users is None else Path(str(users)), pki / OPCUA_KEY):
            if path is not None:
                found.add_file(path if path.is_absolute() else state_dir / path)
    folder = config_dir / SECRETS_DIR
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    except OSError as exc:
        found.unread.append({"file": str(folder), "reason": exc.strerror or str(exc)})
        files = []
    for path in files[:MAX_SECRETS_DIR_FILES]:
        found.add_file(path)
    return found


def _walk(node: object, name: str, found: KnownSecrets, bases: tuple[Path, ...]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            _walk(value, str(key), found, bases)
        return
    if isinstance(node, list | tuple):
        for item in node:
            _walk(item, name, found, bases)
        return
    if node is None or isinstance(node, bool):
        return
    text = str(node)
    if SECRET_NAME.search(name) or name.endswith(("username_file", "users_file")):
        if is_secret_name(name):
            found.add(text.encode())
        elif name.endswith("_file"):
            for path in _candidates(text, bases):
                found.add_file(path)
    for info in urls_userinfo(text):
        found.add(info.encode())
        found.add(urllib.parse.unquote(info).encode())


def _candidates(text: str, bases: tuple[Path, ...]) -> list[Path]:
    """Where a relative file name may be: the daemon resolves the uplink's and the
    commands' files against the config's folder, the OPC UA ones against the state dir."""
    path = Path(text)
    if path.is_absolute():
        return [path]
    return [base / path for base in bases]
