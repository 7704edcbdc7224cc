"""YAML loading that remembers where every key came from.

Validation errors are only useful to a technician when they name the file and line, so the
loader keeps a map from key path to line number next to the plain data. Duplicate keys are
reported too: YAML silently keeps the last one, which hides a typo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smartpole.agent.core.errors import ConfigError, Problem

KeyPath = tuple[str | int, ...]


def format_key_path(path: Sequence[str | int]) -> str:
    """Render ``("devices", "weather", "unit_id")`` as ``devices.weather.unit_id``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class YamlDocument:
    """Parsed data of one file plus the line of each key path (1-based)."""

    file: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """Line of the deepest known prefix of ``path``; a missing key points at its parent."""
        parts = tuple(path)
        while parts:
            line = self.lines.get(parts)
            if line is not None:
                return line
            parts = parts[:-1]
        return self.lines.get((), None)

    def problem(self, path: Sequence[str | int], message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_key_path(path), message)


def load_yaml(path: Path) -> YamlDocument:
    """Load one YAML file; raise ConfigError if it cannot be read or parsed at all."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([Problem(path, None, "", "file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read file: {exc}")]) from exc
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    """Parse YAML text that claims to come from ``path``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        doc = YamlDocument(path, None, {(): 1})
        if node is not None:
            # Walk before constructing: construction flattens merge keys (<<) into the
            # node in place, after which an override would look like a duplicate.
            _walk(loader, node, (), doc, frozenset())
            doc.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = f"invalid YAML: {exc.problem or exc.context}"
        raise ConfigError([Problem(path, line, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(path, None, "", f"invalid YAML: {exc}")]) from exc
    except (ValueError, TypeError) as exc:  # e.g. 2026-02-30: a date YAML cannot build
        raise ConfigError([Problem(path, None, "", f"invalid value: {exc}")]) from exc
    finally:
        loader.dispose()
    return doc


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _walk(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: KeyPath,
    doc: YamlDocument,
    ancestors: frozenset[int],
) -> None:
    if id(node) in ancestors:
        return  # a recursive alias; the constructor decides whether that is valid
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[str | int, int] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            _walk_pair(loader, key_node, value_node, path, doc, ancestors, seen, explicit=True)
        # Explicit keys win over merged ones, and earlier merge sources over later ones.
        for source in merged:
            for mapping in source.value if isinstance(source, yaml.SequenceNode) else [source]:
                if isinstance(mapping, yaml.MappingNode):
                    for key_node, value_node in mapping.value:
                        _walk_pair(
                            loader, key_node, value_node, path, doc, ancestors, seen, explicit=False
                        )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[(*path, index)] = item.start_mark.line + 1
            _walk(loader, item, (*path, index), doc, ancestors)


def _walk_pair(
    loader: yaml.SafeLoader,
    key_node: yaml.Node,
    value_node: yaml.Node,
    path: KeyPath,
    doc: YamlDocument,
    ancestors: frozenset[int],
    seen: dict[str | int, int],
    *,
    explicit: bool,
) -> None:
    if key_node.tag == _MERGE_TAG:
        return  # nested merges inside a merge source are walked when that source is
    key = loader.construct_object(key_node, deep=True)
    line = key_node.start_mark.line + 1
    if not isinstance(key, str | int):
        doc.problems.append(
            Problem(doc.file, line, format_key_path(path), f"key {key!r} is not a string")
        )
        return
    if key in seen:
        if not explicit:
            return  # overridden by an explicit key or an earlier merge source
        doc.problems.append(
            Problem(
                doc.file,
                line,
                format_key_path((*path, key)),
                f"duplicate key (first given on line {seen[key]})",
            )
        )
    # YAML keeps the last value of a duplicated key, so its line is the one to report.
    seen[key] = line
    doc.lines[(*path, key)] = line
    _walk(loader, value_node, (*path, key), doc, ancestors)
