"""``diag bundle``'s bad input: refused at once, with exit 2 and a message, nothing written;
and a config that is not even YAML, which is still copied, with its secrets taken out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from smartpole.agent.cli import main
from smartpole.agent.technician.bundle import Collector, config_member


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """``main`` points the logs at this test's captured stderr, closed once the test ends:
    later tests would log into a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _bundle(tmp_path: Path, *args: str) -> int:
    state = tmp_path / "state"
    return main(["diag", "bundle", "--config", str(tmp_path / "pole.yaml"),
                 "--state-dir", str(state), *args])  # fmt: skip


def test_a_folder_that_cannot_be_written_is_refused_before_anything_is_gathered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no-such-folder" / "b.tar.gz"
    assert _bundle(tmp_path, "-o", str(target)) == 2
    err = capsys.readouterr().err
    assert f"cannot write the bundle to {target}: No such file or directory" in err
    assert not target.parent.exists()


def test_an_existing_file_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "pole.yaml"
    target.write_text("pole: {id: x}\n")
    assert _bundle(tmp_path, "-o", str(target)) == 2
    assert f"{target} exists" in capsys.readouterr().err
    assert target.read_text() == "pole: {id: x}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pole.yaml"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diag", "status", "-o", "x.tar.gz"], "--output applies to diag bundle only"),
        (["diag", "scan", "--port", "/dev/null", "--journal-lines", "5"], "--journal-lines"),
        (["diag", "bundle", "--port", "/dev/ttyUSB0"], "--port applies to diag scan"),
        (["diag", "bundle", "lamp1"], "diag bundle takes options only"),
    ],
)
def test_options_that_do_not_go_together_are_refused(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_a_config_that_is_not_yaml_is_copied_as_text_without_its_secrets(tmp_path: Path) -> None:
    config = tmp_path / "pole.yaml"
    config.write_text(
        "pole: {id: x\n"  # the flow mapping never closes
        "uplink:\n  password: hunter2-inline\n  host: mqtt://ops:Broker-Pw-9@10.1.1.1\n"
        "  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIIEvQIBADANBgkq\n"
        "    -----END PRIVATE KEY-----\n"
    )
    sink = Collector()
    assert isinstance(config_member(sink, config), str)  # the text, for the secret scan
    copied = sink.members["config/pole.yaml"].decode()
    assert "not valid YAML" in copied
    assert "host: mqtt://[REDACTED]@10.1.1.1" in copied
    for secret in ("hunter2-inline", "Broker-Pw-9", "MIIEvQIBADANBgkq"):
        assert secret not in copied
    assert [f["item"] for f in sink.failed] == [f"config {config}"]
