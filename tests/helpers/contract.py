"""The published uplink contract as an integrator reads it: docs/uplink.md's topic table and
examples, and the JSON Schemas in schemas/uplink/, checked with ``jsonschema`` (Draft
2020-12, format checking on), never with the pole's own models.

Nothing here imports smartpole: the table is parsed from the docs, the topic of a stream
message is found through the table's stream column, and the schemas are read as files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema

from helpers.paths import REPO

SCHEMAS = REPO / "schemas" / "uplink"
DOCS = REPO / "docs" / "uplink.md"
PREFIX = "smartpole/v1/"


@dataclass(frozen=True)
class Topic:
    name: str  # under smartpole/v1/<pole_id>/
    direction: str
    retained: bool
    schema: str  # file name in schemas/uplink/
    stream: str | None  # the outbox stream whose records go to this topic


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _ticked(cell: str) -> str | None:
    match = re.search(r"`([^`]+)`", cell)
    return match.group(1) if match else None


@cache
def topic_table() -> dict[str, Topic]:
    """The table under "## Topics" in docs/uplink.md: topic -> its row."""
    text = DOCS.read_text()
    section = text.split("\n## Topics\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    topics = {}
    for row in rows:
        cells = _cells(row)
        name, schema = _ticked(cells[0]), _ticked(cells[3])
        assert name is not None, f"a topic row without a topic: {row}"
        assert schema is not None, f"a topic row without a schema: {row}"
        stream = _ticked(cells[4]) if len(cells) > 4 else None
        topics[name] = Topic(name, cells[1], cells[2] == "yes", schema, stream)
    assert topics, "no topic table in docs/uplink.md"
    return topics


@cache
def validator(schema_file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def errors(schema_file: str, payload: object) -> list[str]:
    """What the schema has against ``payload`` (empty: valid)."""
    found = validator(schema_file).iter_errors(payload)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in found]


def topic_of(mqtt_topic: str, pole: str) -> Topic:
    """The table's row for a topic the pole published on; fails for one it does not list."""
    base = f"{PREFIX}{pole}/"
    assert mqtt_topic.startswith(base), mqtt_topic
    suffix = mqtt_topic[len(base) :]
    table = topic_table()
    assert suffix in table, f"{mqtt_topic}: no row in the docs' topic table, so no schema"
    return table[suffix]


def topic_of_stream(stream: str) -> Topic:
    for topic in topic_table().values():
        if topic.stream == stream:
            return topic
    raise AssertionError(f"no topic in the docs' table carries the stream {stream!r}")


def docs_examples() -> list[Any]:
    """Every JSON value in every ```json block of docs/uplink.md (a block may hold several)."""
    found: list[Any] = []
    decoder = json.JSONDecoder()
    for block in re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.DOTALL):
        at = 0
        while (at := _skip_space(block, at)) < len(block):
            value, at = decoder.raw_decode(block, at)
            found.append(value)
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def example_topics(example: Any) -> list[Topic]:
    """The topics whose schema ``example`` validates against: for a stream message, the
    one its stream goes to (and it must validate there); otherwise every topic whose
    schema accepts it. Empty means it matches no schema."""
    if isinstance(example, dict) and "stream" in example:
        topic = topic_of_stream(str(example["stream"]))
        return [topic] if not errors(topic.schema, example) else []
    return [t for t in topic_table().values() if not errors(t.schema, example)]
