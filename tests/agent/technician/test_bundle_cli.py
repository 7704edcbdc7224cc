"""``diag bundle``'s bad input: refused at once, with exit 2 and a message, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartpole.agent.cli import main


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
