"""Reading a config file the file cannot turn against us: FIFOs, devices, size, encoding."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from smartpole.agent.config.safefile import MAX_CONFIG_BYTES, read_config_bytes, read_config_text
from smartpole.agent.config.yamlsource import load_yaml
from smartpole.agent.core.errors import ConfigError, Problem


def _problem(path: Path) -> Problem:
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    (problem,) = caught.value.problems
    assert problem.file == path
    return problem


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pole.yaml"
    os.mkfifo(path)
    return path


def test_a_fifo_is_refused_without_waiting_for_a_writer(fifo: Path) -> None:
    # Without a writer a blocking open() of a FIFO never returns: run it where a hang
    # shows as a failure instead of stopping the test run.
    done = threading.Event()
    found: list[Problem] = []

    def read() -> None:
        found.append(_problem(fifo))
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(10):
        # Unblock the reader so the thread ends, then fail.
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO config hung")
    assert found[0].message == f"not a regular file: {fifo} is a FIFO"


def test_a_fifo_with_a_writer_is_refused_too(fifo: Path) -> None:
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"pole: {id: p}\n")
        assert _problem(fifo).message.endswith("is a FIFO")
    finally:
        os.close(writer)
        os.close(reader)


@pytest.mark.parametrize(("device", "kind"), [("/dev/zero", "a character device")])
def test_a_device_is_refused(device: str, kind: str) -> None:
    path = Path(device)
    problem = _problem(path)
    assert problem.message == f"not a regular file: {device} is {kind}"
    assert problem.line is None


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "pole.yaml"
    link.symlink_to("/dev/zero")
    assert _problem(link).message == f"not a regular file: {link} is a character device"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert _problem(tmp_path).message == f"not a regular file: {tmp_path} is a directory"


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as out:  # sparse: 60 MiB that cost no disk
        out.truncate(60 << 20)
    problem = _problem(path)
    assert problem.message == "file is 60 MiB, larger than the limit of 1 MiB"


def test_the_limit_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * (MAX_CONFIG_BYTES - 6) + b"\n")
    assert len(read_config_bytes(path)) == MAX_CONFIG_BYTES
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(ConfigError):
        read_config_bytes(path)


def test_the_read_stops_at_the_limit_whatever_the_size_said(tmp_path: Path) -> None:
    # A file that grows after the size check: the read itself is bounded too.
    path = tmp_path / "small.yaml"
    path.write_bytes(b"x" * 100)
    assert read_config_bytes(path, limit=100) == b"x" * 100
    with pytest.raises(ConfigError) as caught:
        read_config_bytes(path, limit=99)
    assert "larger than the limit of 99 bytes" in caught.value.problems[0].message


def test_a_byte_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("pole:\n  id: p\n  name: Stra\xdfe\n".encode("latin-1"))
    problem = _problem(path)
    assert (problem.line, problem.message) == (3, "not UTF-8 text: byte 0xdf")
    assert str(problem).startswith(f"{path}:3: ")


def test_a_missing_file_and_an_unreadable_one(tmp_path: Path) -> None:
    assert _problem(tmp_path / "nope.yaml").message == "file not found"
    assert _problem(tmp_path / "a\0b.yaml").message.startswith("cannot read file: ")
    if os.geteuid() != 0:  # root reads whatever the mode says
        path = tmp_path / "secret.yaml"
        path.write_text("a: 1\n")
        path.chmod(0)
        assert _problem(path).message == "cannot read file: Permission denied"


def test_text_is_decoded_and_keeps_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_config_text(path) == "\ufeffa: 1\n"
    assert load_yaml(path).data == {"a": 1}
