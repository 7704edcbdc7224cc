"""``smartpole keys new`` and ``keys rotate``: key files that are random, private, whole, and
never overwritten by accident; and a key file means exactly what docs/uplink.md says."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
from pathlib import Path

import pytest

from helpers.processes import SMARTPOLE
from smartpole.agent import keys
from smartpole.agent.core.errors import AgentError
from smartpole.agent.uplink.command_auth import HmacKey


def _keys(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTPOLE, "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(umask),
    )


def test_keys_new_writes_a_random_private_key_the_daemon_accepts(tmp_path: Path) -> None:
    first, second = tmp_path / "a.key", tmp_path / "b.key"
    for path in (first, second):
        result = _keys("new", str(path), umask=0)  # even a umask of 0 gives 0600
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = first.read_bytes()
    assert len(text) == 65
    assert text.endswith(b"\n")
    assert bytes.fromhex(text.decode().strip())  # 64 hex characters
    assert text != second.read_bytes()
    assert text.decode() not in result.stdout + result.stderr, "the key is never printed"
    # The daemon's key is the 64 ASCII characters, as the docs say (not the 32 bytes).
    message = b"message"
    signature = hmac.new(text.strip(), message, hashlib.sha256).hexdigest()
    assert HmacKey(first).check(message, signature)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "b.key"], "no stray file"


def test_keys_new_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "pole.key"
    assert _keys("new", str(path)).returncode == 0
    before = path.read_bytes()
    refused = _keys("new", str(path))
    assert refused.returncode == 2
    assert "exists; --force replaces it" in refused.stderr
    assert path.read_bytes() == before
    assert _keys("new", "--force", str(path)).returncode == 0
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pole.key"]


def test_a_failed_move_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The key is written beside its name and then moved: when the move fails, what was
    there stays, and no half-written or stray key file is left behind."""
    path = tmp_path / "pole.key"
    path.mkdir()
    (path / "inside").write_text("x")
    with pytest.raises(AgentError):
        keys.write_key_file(path, keys.new_key_text(), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pole.key"]
    assert (path / "inside").read_text() == "x"


def test_keys_rotate_keeps_the_old_key_as_previous(tmp_path: Path) -> None:
    current, previous = tmp_path / "pole.key", tmp_path / "pole.key.previous"
    assert _keys("new", str(current)).returncode == 0
    old = current.read_bytes()
    result = _keys("rotate", str(current), str(previous))
    assert result.returncode == 0, result.stderr
    assert previous.read_bytes() == old
    assert current.read_bytes() != old
    assert stat.S_IMODE(previous.stat().st_mode) == 0o600
    # A second rotation while the overlap is still on would lose the key it holds.
    again = _keys("rotate", str(current), str(previous))
    assert again.returncode == 2
    assert previous.read_bytes() == old


def test_keys_rotate_refuses_a_current_file_without_a_key(tmp_path: Path) -> None:
    current = tmp_path / "pole.key"
    current.write_bytes(b"short\n")
    result = _keys("rotate", str(current), str(tmp_path / "previous"))
    assert result.returncode == 2
    assert not (tmp_path / "previous").exists()


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b"0123456789abcdef\n", b"0123456789abcdef"),
        (b"  \t0123456789abcdef \r\n\n", b"0123456789abcdef"),
        (b"0123456789 abcdef", b"0123456789 abcdef"),  # inner whitespace is part of it
        (bytes(range(40, 80)), bytes(range(40, 80))),
    ],
)
def test_a_key_file_is_its_bytes_without_surrounding_whitespace(
    tmp_path: Path, content: bytes, key: bytes
) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    path.chmod(0o600)
    signature = hmac.new(key, b"m", hashlib.sha256).hexdigest()
    assert HmacKey(path).check(b"m", signature)
