"""Taking secrets out of what a support bundle carries, by structure first.

A bundle leaves the pole (a technician mails it, a vendor's ticket keeps it), so nothing in
it may let its reader talk to the broker or sign a command. This module is the first of the
two defences, the one that knows the shapes secrets come in:

- in a YAML or JSON tree, a scalar under a key named like a secret (password, secret,
  token, key, credential) becomes :data:`MARK`; keys ending ``_file``, ``_dir`` or
  ``_path`` hold where a secret is, not the secret, and stay (the technician needs to see
  which file the pole was told to use; its content never enters the bundle);
- in any text: the user information of a URL (``rtsp://user:pass@camera``), PEM blocks
  (``-----BEGIN ... PRIVATE KEY-----``) and ``NAME=value`` / ``NAME: value`` with a
  secret-like name.

The second defence, for what no rule foresaw, is :mod:`.secret_scan`: every member's bytes
searched for the secret values themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

MARK: Final = "[REDACTED]"

#: A key or variable name that holds a secret. Matched anywhere in the name, so
#: ``mqtt_password`` and ``hmac_key`` are caught; over-matching (``keypad``) only hides a
#: value, which a bundle can afford.
SECRET_NAME: Final = re.compile(r"pass(?:word|wd|phrase)?|secret|token|key|credential", re.I)
#: Names that hold where a secret lives rather than the secret.
PATH_NAME: Final = re.compile(r"(?:_file|_dir|_path)$", re.I)

_USERINFO: Final = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/\s\"'<>]*)@")
_PEM: Final = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----.*?(?:-----END (?P=label)-----|\Z)", re.S
)
_ASSIGNMENT: Final = re.compile(
    r"(?P<name>[A-Za-z_][\w.-]*)(?P<sep>\"?[ \t]*[=:][ \t]*\"?)(?P<value>[^\s\"',;}\]]+)"
)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not PATH_NAME.search(name)


def redact_text(text: str) -> str:
    """URL user information, PEM blocks and secret-named assignments in free text (log
    lines, ``systemctl show``, an error message that quotes a URL)."""
    text = _PEM.sub(lambda m: f"[REDACTED {m.group('label')}]", text)
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MARK}@", text)
    return _ASSIGNMENT.sub(_assignment, text)


def _assignment(match: re.Match[str]) -> str:
    if not is_secret_name(match.group("name")) or match.group("value") == MARK:
        return match.group(0)
    return f"{match.group('name')}{match.group('sep')}{MARK}"


def redact_tree(node: object, name: str = "", *, by_name: bool = True) -> object:
    """A copy of a parsed YAML/JSON tree with secrets replaced; ``name`` is the key the
    node sits under. Mappings and lists are walked whatever their key is called: a device
    named ``keypad`` keeps its settings, only scalars under secret-like names go.

    ``by_name=False`` (the daemon's answers, whose fields we named and which hold no
    secret by design) only cleans strings: a counter called ``key_rotations`` stays."""
    if isinstance(node, Mapping):
        return {
            _redact_key(key): redact_tree(value, str(key), by_name=by_name)
            for key, value in node.items()
        }
    if isinstance(node, list | tuple):
        return [redact_tree(item, name, by_name=by_name) for item in node]
    if node is None or isinstance(node, bool):
        return node
    if by_name and name and is_secret_name(name):
        return MARK
    if isinstance(node, str):
        return redact_text(node)
    return node


def _redact_key(key: object) -> object:
    return redact_text(key) if isinstance(key, str) else key


def urls_userinfo(text: str) -> list[str]:
    """The user information of every URL in ``text`` (``user:pass`` and ``pass``), for the
    list of values the safety net looks for."""
    found: list[str] = []
    for match in _USERINFO.finditer(text):
        info = match.group("info")
        if not info:
            continue
        found.append(info)
        _, sep, password = info.partition(":")
        if sep and password:
            found.append(password)
    return found
