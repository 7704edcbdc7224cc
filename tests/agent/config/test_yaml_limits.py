"""YAML the parser must refuse with a located problem: control characters, deep nesting,
alias bombs and recursive aliases - never a traceback, a stack overflow or gigabytes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smartpole.agent.config.yamlsource import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_EXPANDED_NODES,
    parse_yaml,
)
from smartpole.agent.core.errors import ConfigError, Problem

FILE = Path("/etc/smartpole/pole.yaml")


def _problem(text: str) -> Problem:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, FILE)
    (problem,) = caught.value.problems
    assert problem.file == FILE
    return problem


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x9f", "\ufffe"])
def test_a_control_character_is_located(char: str) -> None:
    problem = _problem(f"pole:\n  id: p\n  name: a{char}b\n")
    assert problem.line == 3
    code = f"U+{ord(char):04X}"
    assert problem.message == f"invalid YAML: control character {code} is not allowed"


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 1000 + "]" * 1000 + "\n",
        "a: " + "{b: " * 1000 + "1" + "}" * 1000 + "\n",
        "".join(f"{' ' * i}k{i}:\n" for i in range(1000)),
        "a: " + "[" * 200_000,  # never closed either
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings", "unclosed"],
)
def test_deep_nesting_is_refused_before_the_stack_runs_out(text: str) -> None:
    problem = _problem(text)
    assert problem.message == f"nested deeper than {MAX_DEPTH} levels (aliases expanded)"
    assert problem.line is not None


def test_nesting_up_to_the_limit_is_fine() -> None:
    depth = MAX_DEPTH - 1  # the top-level mapping is a level too
    doc = parse_yaml("a: " + "[" * depth + "1" + "]" * depth + "\n", FILE)
    value = doc.data["a"]
    for _ in range(depth):
        (value,) = value
    assert value == 1
    with pytest.raises(ConfigError):
        parse_yaml("a: " + "[" * (depth + 1) + "1" + "]" * (depth + 1) + "\n", FILE)


def _bomb(levels: int, fan: int) -> str:
    """The billion laughs: each level a list of ``fan`` aliases of the level below."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_by_its_expanded_size() -> None:
    text = _bomb(9, 9)  # 9**9 = 387 million strings from 800 bytes
    assert len(text) < 1024
    problem = _problem(text)
    assert problem.message == f"aliases expand the document beyond {MAX_EXPANDED_NODES} nodes"
    assert problem.line is not None


# The bomb in a child process whose address space is capped: without the limit the loader
# walks the expanded tree (2.2 GB measured) and dies of MemoryError - or the cap kills it.
_CHILD = textwrap.dedent(
    """
    import json, resource, sys, tracemalloc
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from smartpole.agent.config.yamlsource import parse_yaml
    from smartpole.agent.core.errors import ConfigError
    tracemalloc.start()
    try:
        parse_yaml(sys.stdin.read(), Path("bomb.yaml"))
        outcome = "accepted"
    except ConfigError as exc:
        outcome = str(exc.problems[0])
    print(json.dumps({"outcome": outcome, "peak": tracemalloc.get_traced_memory()[1]}))
    """
)


def test_an_alias_bomb_costs_little_memory_and_time() -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=_bomb(9, 9),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    assert result["outcome"].startswith("bomb.yaml:")
    assert "aliases expand the document" in result["outcome"]
    assert result["peak"] < 5 << 20, result  # bytes; the walk of the expansion took GBs


def test_aliases_that_stay_small_are_fine() -> None:
    text = _bomb(3, 4) + "top: [*l2, *l1]\n"
    doc = parse_yaml(text, FILE)
    assert doc.data["l2"] == [[["lol"] * 4] * 4] * 4
    assert doc.data["top"][0] is doc.data["l2"]  # shared, never copied
    assert doc.problems == []
    # Below an alias a key path has the line of the alias's item (the anchor's).
    assert doc.line_of(("top", 0, 1, 2)) == doc.lines[("top", 0)] == 3


def test_deep_nesting_through_aliases_is_refused() -> None:
    # Each anchor is shallow; chained through aliases they are deep.
    step = 10
    lines = ["a0: &a0 1"]
    for level in range(1, 12):
        lines.append(f"a{level}: &a{level} " + "[" * step + f"*a{level - 1}" + "]" * step)
    problem = _problem("\n".join(lines) + "\n")
    assert problem.message == f"nested deeper than {MAX_DEPTH} levels (aliases expanded)"


@pytest.mark.parametrize(
    "text",
    ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a\n  b: &b\n    c: *a\n"],
)
def test_a_recursive_alias_is_refused(text: str) -> None:
    problem = _problem(text)
    assert problem.message == "an alias refers to a node that contains it"
    assert problem.line == 1


def test_too_many_aliases_are_refused() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    problem = _problem(text)
    assert problem.message == f"more than {MAX_ALIASES} aliases"
    assert problem.line == 2
    fine = "a: &a 1\nb: [" + ", ".join(["*a"] * MAX_ALIASES) + "]\n"
    assert parse_yaml(fine, FILE).data["b"] == [1] * MAX_ALIASES


def test_merge_keys_within_the_budget_still_work() -> None:
    text = "defaults: &defaults {bus: rs485-1, poll_period_s: 5}\ndevices:\n" + "".join(
        f"  d{i}:\n    <<: *defaults\n    unit_id: {i + 1}\n" for i in range(MAX_ALIASES)
    )
    doc = parse_yaml(text, FILE)
    assert doc.data["devices"]["d7"] == {"bus": "rs485-1", "poll_period_s": 5, "unit_id": 8}
    assert doc.problems == []


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("a: !!binary 'QQ'\n", "invalid YAML: "),
        ("a: !!python/object:os.system x\n", "invalid YAML: "),
        ("a: 2026-02-30\n", "invalid value: "),
        ("? [a, b]\n: 1\n", "invalid YAML: "),
        ("a: !!int 1" + "0" * 5000 + "\n", "invalid value: "),
    ],
)
def test_values_yaml_cannot_build_are_problems(text: str, what: str) -> None:
    assert _problem(text).message.startswith(what)


def test_a_boolean_key_is_not_taken_for_a_string() -> None:
    doc = parse_yaml("on: 1\n", FILE)  # YAML 1.1: the key is True
    assert [(p.line, p.message) for p in doc.problems] == [(1, "key True is not a string")]


def test_numbers_with_an_exponent_are_numbers() -> None:
    # YAML 1.1 reads 1.0e12 (no exponent sign) as a string, which strict floats refuse.
    doc = parse_yaml("a: [1.0e12, 1e3, -2.5E-2, 1.0e+3, e12, 1e]\n", FILE)
    assert doc.data["a"] == [1.0e12, 1000.0, -0.025, 1000.0, "e12", "1e"]


def test_a_file_of_too_many_values_is_refused_while_parsing() -> None:
    text = "a: [" + "1," * MAX_EXPANDED_NODES + "1]\n"
    problem = _problem(text)
    assert problem.message == f"more than {MAX_EXPANDED_NODES} values in one file"
    assert problem.line == 1
