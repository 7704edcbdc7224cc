"""Read a configuration file without letting the file decide how long or how much.

A config path is operator input like the file's content: a FIFO left where the config
should be would block the open or the read forever, ``/dev/zero`` never ends, and a file
that grew by mistake (a log redirected into it) would be read whole. Every file the agent
reads from its config folder goes through here, so each of those ends in one located
problem and exit 2 instead of a hang, a memory spike or a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

from smartpole.agent.core.errors import ConfigError, Problem

#: The largest config file read: a pole config is a few KiB, so a MiB is a mistake.
MAX_CONFIG_BYTES: Final = 1 << 20

_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnsafeFileError(OSError):
    """The path is no regular file, or a larger one than the reader takes."""


def read_small_file(path: Path, limit: int) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes, else an OSError.

    For readers that already handle OSError (secrets, key and users files read at run
    time): a FIFO there would block the event loop, and with it the lights. The type and
    size are checked before the open (opening a serial device can toggle its lines) and
    again on the open descriptor (the path may have been replaced in between). The open is
    non-blocking, so a FIFO cannot hold it, and the read stops at ``limit + 1`` bytes
    whatever the size said.
    """
    _check(path, path.stat(), limit)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check(path, os.fstat(fd), limit)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise _unsafe(f"{path} is larger than the limit of {_size(limit)}")
    return data


def read_config_bytes(path: Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """``read_small_file`` for config files: every failure is one located ConfigError."""
    try:
        return read_small_file(path, limit)
    except FileNotFoundError as exc:
        raise _error(path, "file not found") from exc
    except UnsafeFileError as exc:
        raise _error(path, str(exc.strerror)) from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise _error(path, f"cannot read file: {_reason(exc)}") from exc


def read_config_text(path: Path, limit: int = MAX_CONFIG_BYTES) -> str:
    """The file decoded as UTF-8; bytes that are not are reported with their line."""
    data = read_config_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = Problem(path, line, "", f"not UTF-8 text: byte 0x{data[exc.start]:02x}")
        raise ConfigError([problem]) from exc


def _check(path: Path, info: os.stat_result, limit: int) -> None:
    for test, kind in _KINDS:
        if test(info.st_mode):
            raise _unsafe(f"not a regular file: {path} is {kind}")
    if not stat.S_ISREG(info.st_mode):
        raise _unsafe(f"not a regular file: {path}")
    if info.st_size > limit:
        raise _unsafe(f"file is {_size(info.st_size)}, larger than the limit of {_size(limit)}")


def _unsafe(message: str) -> UnsafeFileError:
    return UnsafeFileError(errno.EINVAL, message)


def _error(path: Path, message: str) -> ConfigError:
    return ConfigError([Problem(path, None, "", message)])


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _size(count: int) -> str:
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count} bytes"
