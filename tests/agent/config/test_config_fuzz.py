"""The config campaign: malformed configs end in exit 0 or 2, never a traceback or a hang.

Mutations of the demo config and its profiles (byte flips, truncation, control characters,
deep nesting, aliases, type swaps, duplicated and deleted lines) go through the very
function ``smartpole config check`` runs, in-process; a handful of hostile files go
through the real command line, for ``config check`` and ``run`` alike. systemd restarts the
daemon after any exit but 2, so an exit 1 on a bad file is an endless restart loop.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.paths import PROFILES, REPO
from helpers.processes import SMARTPOLE
from smartpole.agent import cli

DEMO = REPO / "configs" / "poles" / "demo.yaml"
HANG_S = 20  # one check takes well under a second; this long is a hang


@dataclass(frozen=True)
class Workdir:
    pole: Path
    profiles: Path
    originals: dict[Path, bytes]

    def restore(self) -> None:
        for path, data in self.originals.items():
            path.write_bytes(data)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    root = tmp_path_factory.mktemp("campaign")
    profiles = root / "profiles"
    shutil.copytree(PROFILES, profiles)
    pole = root / "poles" / "pole.yaml"
    pole.parent.mkdir()
    pole.write_bytes(DEMO.read_bytes())
    files = [pole, *sorted(profiles.glob("*.yaml"))]
    return Workdir(pole, profiles, {path: path.read_bytes() for path in files})


class HangError(Exception):
    pass


@contextlib.contextmanager
def _hang_guard(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: FrameType | None) -> None:
        raise HangError(f"the config check took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_in_process(path: Path) -> tuple[int, str]:
    """``smartpole config check PATH`` in this process: (exit code, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _hang_guard(HANG_S):
        try:
            code = cli.main(["config", "check", str(path)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


# ----- mutations -----

VALUE_LINE = re.compile(rb"^(\s*(?:- )?[\w.-]+: )(\S.*)$", re.MULTILINE)
SWAPS = [
    b"true", b"false", b"1.0", b"0.5", b"-1", b"0", b"null", b"~", b"[]", b"{}", b"'1'",
    b"1e999", b".nan", b"-.inf", b"99999999999999999999999", b"2026-02-30", b"!!binary QQ",
    b'"\\0"', b"0x1F", b"*undefined", b"&a [*a]", b"!!set {a}", b"? [x]", b"'\xe2\x80\xa8'",
    b"1" + b"0" * 5000, b"'" + b"1" * 5000 + b"'", b"'\xc2\xb2'", b"'007'", b"x" * 3000,
    b"!!python/object:os.system x", b"|\n  text",
]  # fmt: skip
CONTROL = [bytes([c]) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]]
CONTROL += [b"\xc2\x85", b"\xc2\x9f", b"\xef\xbf\xbe", b"\x80", b"\xff", b"\xc3"]


def _bomb(levels: int, fan: int) -> bytes:
    lines = [b"b0: &b0 [" + b", ".join([b"lol"] * fan) + b"]"]
    for level in range(1, levels):
        alias = b"*b%d" % (level - 1)
        lines.append(b"b%d: &b%d [" % (level, level) + b", ".join([alias] * fan) + b"]")
    return b"\n".join(lines) + b"\n"


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(
            st.sampled_from(
                ["flip", "byte", "truncate", "control", "deep", "alias", "swap", "dup", "drop"]
            )
        )
        if kind == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
        elif kind == "byte":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "control":
            data = data[:at] + draw(st.sampled_from(CONTROL)) + data[at:]
        elif kind == "deep":
            depth = draw(st.integers(40, 3000))
            opener, closer = draw(st.sampled_from([(b"[", b"]"), (b"{a: ", b"}")]))
            data = data + b"deep: " + opener * depth + b"1" + closer * depth + b"\n"
        elif kind == "alias":
            data += draw(
                st.sampled_from(
                    [
                        _bomb(9, 9),
                        _bomb(4, 4) + b"more: [*b3, *b3]\n",
                        b"loop: &loop {self: *loop}\n",
                        b"x: *nowhere\n",
                        b"m: &m {k: 1}\nn:\n  <<: *m\n  <<: *m\n",
                    ]
                )
            )
        elif kind == "swap":
            lines = list(VALUE_LINE.finditer(data))
            if lines:
                line = draw(st.sampled_from(lines))
                value = draw(st.sampled_from(SWAPS))
                data = data[: line.start(2)] + value + data[line.end(2) :]
        else:  # a duplicated or a deleted line
            lines = data.split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            if kind == "dup":
                lines.insert(index, lines[index])
            else:
                del lines[index]
            data = b"\n".join(lines)
    return data


def _assert_clean(code: int, stderr: str, path: Path) -> None:
    assert code in (0, 2), (code, stderr[-3000:])
    assert "Traceback" not in stderr
    if code == 2:
        problems = [line for line in stderr.splitlines() if line]
        assert problems, "exit 2 must say why"
        # file:line: key: message, or file: key: message when no line applies
        for line in problems:
            assert re.match(r"^/\S+?(:\d+)?: ", line), line


def _campaign(workdir: Workdir, data: st.DataObject) -> None:
    # Mostly the pole config; a mutated profile mostly leaves a valid config, whose check
    # (a year of dusk and dawn for the lighting checks) is the slow one.
    profiles = [path for path in workdir.originals if path != workdir.pole]
    target = data.draw(
        st.sampled_from(profiles) if data.draw(st.integers(0, 3)) == 0 else st.just(workdir.pole),
        label="file",
    )
    try:
        target.write_bytes(data.draw(mutated(workdir.originals[target]), label="content"))
        code, stderr = check_in_process(workdir.pole)
    finally:
        workdir.restore()
    _assert_clean(code, stderr, workdir.pole)


CAMPAIGN = settings(
    deadline=None,  # a slow machine is no failure; a hang is caught by the alarm
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_unmutated_config_passes(workdir: Workdir) -> None:
    code, stderr = check_in_process(workdir.pole)
    assert (code, stderr) == (0, "")


@settings(CAMPAIGN, max_examples=50)
@given(st.data())
def test_no_malformed_config_crashes_or_hangs_the_check(
    workdir: Workdir, data: st.DataObject
) -> None:
    _campaign(workdir, data)


@pytest.mark.soak
@settings(CAMPAIGN, max_examples=3000)
@given(st.data())
def test_no_malformed_config_crashes_or_hangs_the_check_soak(
    workdir: Workdir, data: st.DataObject
) -> None:
    _campaign(workdir, data)


# ----- through the real command line -----


def _hostile(tmp_path: Path, case: str) -> Path:
    """A pole config broken one way; the profiles are the shipped ones."""
    pole = tmp_path / "pole.yaml"
    profiles = b"profiles_dir: " + bytes(PROFILES)
    text = DEMO.read_bytes().replace(b"profiles_dir: ../profiles", profiles)
    if case == "control-char":
        pole.write_bytes(text.replace(b"id: demo", b"id: de\x01mo", 1))
    elif case == "deep-nesting":
        pole.write_bytes(text + b"deep: " + b"[" * 600 + b"]" * 600 + b"\n")
    elif case == "alias-bomb":
        pole.write_bytes(text + _bomb(9, 9))
    elif case == "not-utf8":
        pole.write_bytes(text.replace(b"id: demo", b"id: d\xe9mo", 1))
    elif case == "fifo":
        os.mkfifo(pole)
    elif case == "dev-zero":
        pole.symlink_to("/dev/zero")
    elif case == "oversize":
        with pole.open("wb") as out:
            out.write(text)
            out.truncate(60 << 20)
    elif case == "unit-id-true":
        data = yaml.safe_load(text)
        data["devices"]["weather"]["unit_id"] = True
        pole.write_text(yaml.safe_dump(data, sort_keys=False))
    return pole


def _smartpole(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SMARTPOLE, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


HOSTILE = [
    "control-char", "deep-nesting", "alias-bomb", "not-utf8", "fifo", "dev-zero", "oversize",
    "unit-id-true",
]  # fmt: skip
EXPECTED = {
    "control-char": ":4: (top level): invalid YAML: control character U+0001",
    "deep-nesting": ": (top level): nested deeper than 64 levels",
    "alias-bomb": ": (top level): aliases expand the document beyond",
    "not-utf8": ":4: (top level): not UTF-8 text: byte 0xe9",
    "fifo": ": (top level): not a regular file:",
    "dev-zero": ": (top level): not a regular file:",
    "oversize": ": (top level): file is 60 MiB, larger than the limit of 1 MiB",
    "unit-id-true": ": devices.weather.unit_id: Input should be a valid integer (got True)",
}


@pytest.mark.parametrize("case", HOSTILE)
def test_config_check_exits_2_with_a_located_problem(tmp_path: Path, case: str) -> None:
    pole = _hostile(tmp_path, case)
    result = _smartpole("config", "check", str(pole))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(str(pole)), first
    assert EXPECTED[case] in first.removeprefix(str(pole)) or EXPECTED[case] in result.stderr


@pytest.mark.parametrize("case", ["control-char", "deep-nesting", "fifo", "unit-id-true"])
def test_run_exits_2_with_the_problem_in_the_journal(tmp_path: Path, case: str) -> None:
    pole = _hostile(tmp_path, case)
    state = tmp_path / "state"
    result = _smartpole(
        "run", "--config", str(pole), "--state-dir", str(state), "--log-format", "json"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (event,) = [json.loads(line) for line in result.stderr.splitlines()]
    assert event["event"] == "config_invalid"
    assert any(EXPECTED[case] in problem for problem in event["problems"]), event
    assert not state.exists()
