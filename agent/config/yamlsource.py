"""YAML loading that remembers where every key came from, and that a hostile file cannot
turn against the process.

Validation errors are only useful to a technician when they name the file and line, so the
loader keeps a map from key path to line number next to the plain data. Duplicate keys are
reported too: YAML silently keeps the last one, which hides a typo.

A config is parsed by a daemon that systemd restarts unless it exits 2, so every way a file
can be wrong must end in a located problem, never a traceback: nesting is bounded before
the (recursive) composer can exhaust the stack, and aliases are counted and their expanded
size and depth computed on the node graph (each node once) before anything walks the
expanded tree - the validation does, so a kilobyte of nested aliases would otherwise cost
gigabytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from smartpole.agent.config.safefile import read_config_text
from smartpole.agent.core.errors import ConfigError, Problem

KeyPath = tuple[str | int, ...]

#: Deepest nesting of mappings and sequences, aliases expanded; a pole config needs ~8.
MAX_DEPTH: Final = 64
#: Most aliases (``*name``) in one file; merge keys (``<<: *defaults``) use one each.
MAX_ALIASES: Final = 256
#: Most nodes (values, lists, mappings) the document may have, written out or with every
#: alias expanded, which is what the schema validation walks: 100 times the demo config,
#: far less than any alias bomb.
MAX_EXPANDED_NODES: Final = 50_000


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
    return parse_yaml(read_config_text(path), path)


class LimitError(yaml.MarkedYAMLError):
    """The document is beyond a bound of this loader (depth, aliases, expanded size)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting and alias counts beyond the limits.

    The depth is checked while composing, before the composer's recursion gets anywhere
    near Python's stack limit (it takes a few frames per level).
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if not self.check_event(yaml.AliasEvent):
            self._nodes += 1
            if self._nodes > MAX_EXPANDED_NODES:
                message = f"more than {MAX_EXPANDED_NODES} values in one file"
                raise LimitError(problem=message, problem_mark=self._next_mark())
        if self.check_event(yaml.ScalarEvent):
            return super().compose_node(parent, index)
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                message = f"more than {MAX_ALIASES} aliases"
                raise LimitError(problem=message, problem_mark=self._next_mark())
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise LimitError(problem=_too_deep(), problem_mark=self._next_mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _next_mark(self) -> yaml.Mark | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        return mark if isinstance(mark, yaml.Mark) else None


# YAML 1.1 reads ``1.0e12`` (no exponent sign) as a string, which a strict float refuses
# with a puzzling message; YAML 1.2 and every person read it as a number.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    """Parse YAML text that claims to come from ``path``."""
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character, checked up front
        at = text[: exc.position or 0].count("\n") + 1
        code = text[exc.position] if exc.position is not None else "?"
        message = f"invalid YAML: control character U+{ord(code):04X} is not allowed"
        raise ConfigError([Problem(path, at, "", message)]) from exc
    try:
        node = loader.get_single_node()
        doc = YamlDocument(path, None, {(): 1})
        if node is not None:
            _check_expansion(node)
            # Walk before constructing: construction flattens merge keys (<<) into the
            # node in place, after which an override would look like a duplicate.
            _walk(loader, node, (), doc, set())
            doc.data = loader.construct_document(node)
    except LimitError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([Problem(path, line, "", str(exc.problem))]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = f"invalid YAML: {exc.problem or exc.context}"
        raise ConfigError([Problem(path, line, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(path, None, "", f"invalid YAML: {exc}")]) from exc
    except (ValueError, TypeError, OverflowError) as exc:  # 2026-02-30: no date YAML builds
        raise ConfigError([Problem(path, None, "", f"invalid value: {exc}")]) from exc
    finally:
        loader.dispose()
    return doc


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels (aliases expanded)"


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it too far, counting each node once.

    Size and height of the expanded tree are memoised per node of the graph, so the cost
    is that of the file, not of the expansion; the recursion stops at ``MAX_DEPTH``.
    """
    known: dict[int, tuple[int, int]] = {}  # node -> (expanded nodes, collection levels)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, above: int) -> tuple[int, int]:
        if not isinstance(node, yaml.CollectionNode):
            return 1, 0
        size, height = known.get(id(node), (0, 1))
        if above + height > MAX_DEPTH:
            raise LimitError(problem=_too_deep(), problem_mark=node.start_mark)
        if size:
            return size, height
        if id(node) in open_nodes:
            message = "an alias refers to a node that contains it"
            raise LimitError(problem=message, problem_mark=node.start_mark)
        open_nodes.add(id(node))
        children: list[yaml.Node] = (
            [part for pair in node.value for part in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        for child in children:
            child_size, child_height = measure(child, above + 1)
            size += child_size
            height = max(height, child_height + 1)
        size += 1
        open_nodes.discard(id(node))
        if size > MAX_EXPANDED_NODES:
            message = f"aliases expand the document beyond {MAX_EXPANDED_NODES} nodes"
            raise LimitError(problem=message, problem_mark=node.start_mark)
        known[id(node)] = (size, height)
        return size, height

    measure(root, 0)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _walk(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: KeyPath,
    doc: YamlDocument,
    walked: set[int],
) -> None:
    if id(node) in walked:
        # An alias: its keys were checked where it was defined, and below here a line
        # falls back to the alias itself. Walking it again is the expansion a bomb needs.
        return
    walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str | int, int] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            _walk_pair(loader, key_node, value_node, path, doc, walked, seen, explicit=True)
        # Explicit keys win over merged ones, and earlier merge sources over later ones.
        for source in merged:
            for mapping in source.value if isinstance(source, yaml.SequenceNode) else [source]:
                if isinstance(mapping, yaml.MappingNode):
                    for key_node, value_node in mapping.value:
                        _walk_pair(
                            loader, key_node, value_node, path, doc, walked, seen, explicit=False
                        )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[(*path, index)] = item.start_mark.line + 1
            _walk(loader, item, (*path, index), doc, walked)


def _walk_pair(
    loader: yaml.SafeLoader,
    key_node: yaml.Node,
    value_node: yaml.Node,
    path: KeyPath,
    doc: YamlDocument,
    walked: set[int],
    seen: dict[str | int, int],
    *,
    explicit: bool,
) -> None:
    if key_node.tag == _MERGE_TAG:
        return  # nested merges inside a merge source are walked when that source is
    key = loader.construct_object(key_node, deep=True)
    line = key_node.start_mark.line + 1
    if isinstance(key, bool) or not isinstance(key, str | int):
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
    _walk(loader, value_node, (*path, key), doc, walked)
