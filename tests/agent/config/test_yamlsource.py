"""YAML parsing that keeps the line of every key: data, lines, duplicates and syntax errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from smartpole.agent.config.yamlsource import (
    KeyPath,
    format_key_path,
    load_yaml,
    parse_yaml,
)
from smartpole.agent.core.errors import ConfigError

FILE = Path("/etc/smartpole/pole.yaml")

keys = st.text(alphabet="abcd_", min_size=1, max_size=3)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="abcxyz019 -_.:#", max_size=12)
)
trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(keys, children, min_size=1, max_size=4)
    ),
    max_leaves=25,
)
documents = st.dictionaries(keys, trees, min_size=1, max_size=5)


def _key_paths(value: Any, path: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    out: list[tuple[KeyPath, Any]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append(((*path, key), key))
            out += _key_paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.append(((*path, index), index))
            out += _key_paths(child, (*path, index))
    return out


def _content(line: str) -> str:
    """A dumped line without indentation and the ``- `` of the sequences it starts."""
    return re.sub(r"^(\s*-\s)*\s*", "", line)


@given(documents, st.booleans())
def test_parse_yaml_keeps_data_and_the_line_of_every_key(
    data: dict[str, Any], sort_keys: bool
) -> None:
    text = yaml.safe_dump(data, sort_keys=sort_keys, allow_unicode=True)
    doc = parse_yaml(text, FILE)
    assert doc.data == data
    assert doc.problems == []
    assert doc.file == FILE
    lines = text.splitlines()
    paths = _key_paths(data)
    assert set(doc.lines) == {(), *(path for path, _ in paths)}
    for path, key in paths:
        line = doc.lines[path]
        assert 1 <= line <= len(lines), path
        text_at = lines[line - 1]
        if isinstance(key, str):
            assert _content(text_at).startswith(f"{key}:"), (path, line, text_at)
        else:
            assert text_at.lstrip().startswith("-"), (path, line, text_at)


@given(documents)
def test_line_of_a_missing_child_is_its_parent(data: dict[str, Any]) -> None:
    doc = parse_yaml(yaml.safe_dump(data), FILE)
    for path, _ in _key_paths(data):
        assert doc.line_of((*path, "no such key")) == doc.lines[path]
        assert doc.line_of((*path, "no such key", 7)) == doc.lines[path]
    assert doc.line_of(("not there at all",)) == 1
    assert doc.line_of(()) == 1


def test_lines_of_a_known_document() -> None:
    text = "# comment\npole:\n  id: p1\n\nbuses:\n  - name: a\n    port: x\n  - name: b\n"
    doc = parse_yaml(text, FILE)
    assert doc.lines == {
        (): 1,
        ("pole",): 2,
        ("pole", "id"): 3,
        ("buses",): 5,
        ("buses", 0): 6,
        ("buses", 0, "name"): 6,
        ("buses", 0, "port"): 7,
        ("buses", 1): 8,
        ("buses", 1, "name"): 8,
    }
    problem = doc.problem(("buses", 1, "port"), "required key is missing")
    assert (problem.file, problem.line, problem.key) == (FILE, 8, "buses[1].port")


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    text = "pole:\n  id: first\n  name: x\n  id: second\ntop: 1\ntop: 2\n"
    doc = parse_yaml(text, FILE)
    found = sorted((p.line, p.key, p.message) for p in doc.problems)
    assert found == [
        (4, "pole.id", "duplicate key (first given on line 2)"),
        (6, "top", "duplicate key (first given on line 5)"),
    ]
    assert all(p.file == FILE for p in doc.problems)


def test_non_string_key_is_reported() -> None:
    doc = parse_yaml("a:\n  1.5: x\n", FILE)
    assert [(p.line, p.key) for p in doc.problems] == [(2, "a")]
    assert "not a string" in doc.problems[0].message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\n  b: 2\n", 2),
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a: 1\nb: 2\nc: *nowhere\n", 3),
        ("pole:\n  id: x\n\tname: y\n", 3),
    ],
)
def test_syntax_error_has_a_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, FILE)
    (problem,) = caught.value.problems
    assert problem.file == FILE
    assert problem.line == line
    assert problem.message.startswith("invalid YAML: ")


def test_empty_text_is_no_data() -> None:
    doc = parse_yaml("", FILE)
    assert doc.data is None
    assert doc.problems == []
    assert doc.lines == {(): 1}
    assert parse_yaml("# only a comment\n", FILE).data is None


def test_load_yaml_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.message) == (path, None, "file not found")


def test_load_yaml_of_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: Stra\xdfe\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (1, "not UTF-8 text: byte 0xdf")


# Regression: an override of a key brought in by a merge key (<<) was reported as a
# duplicate, and its line pointed at the anchor instead of the override.
def test_merge_key_override_is_not_a_duplicate() -> None:
    text = (
        "defaults: &defaults\n"
        "  bus: rs485-1\n"
        "  unit_id: 1\n"
        "devices:\n"
        "  weather:\n"
        "    <<: *defaults\n"
        "    unit_id: 2\n"
    )
    doc = parse_yaml(text, FILE)
    assert doc.data["devices"]["weather"] == {"bus": "rs485-1", "unit_id": 2}
    assert doc.problems == []
    assert doc.lines[("devices", "weather", "unit_id")] == 7


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("devices",), "devices"),
        (("devices", "weather", "unit_id"), "devices.weather.unit_id"),
        (("test_vectors", 0, "expect", "rain"), "test_vectors[0].expect.rain"),
        (("a", 0, 1, "b"), "a[0][1].b"),
        ((0,), "[0]"),
        ((0, "a"), "[0].a"),
        (("buses", "rs485-1"), "buses.rs485-1"),
    ],
)
def test_format_key_path(path: KeyPath, text: str) -> None:
    assert format_key_path(path) == text
    assert format_key_path(list(path)) == text


@given(st.lists(st.integers(0, 99) | st.text(alphabet="abz_-", min_size=1, max_size=4)))
def test_format_key_path_can_be_read_back(path: list[str | int]) -> None:
    rendered = format_key_path(path)
    parsed = [
        int(index) if index else name
        for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", rendered)
    ]
    assert parsed == path
