"""Pydantic's validation errors as a technician's problems: file, line, key, and a message
that says what to write instead (the allowed keys, the closest spelling, the value given).

Union tags (a bus's ``type``, a profile's ``protocol``) are dropped from the locations, so a
problem points at the key as it is written in the YAML file.
"""

from __future__ import annotations

import difflib
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from smartpole.agent.config.yamlsource import YamlDocument
from smartpole.agent.core.errors import Problem

ModelT = TypeVar("ModelT", bound=BaseModel)

EMPTY_CONFIG = (
    "the file holds no settings, only comments: fill in at least pole:, buses: and devices: "
    "(the comments show examples; docs/configuration.md), then run smartpole config check"
)


def validate(doc: YamlDocument, model: type[ModelT]) -> tuple[ModelT | None, list[Problem]]:
    """Validate a document against a model; translate pydantic's errors into Problems."""
    if doc.data is None and not doc.problems:  # e.g. the package's all-comments template
        return None, [doc.problem((), EMPTY_CONFIG)]
    if not isinstance(doc.data, dict):
        return None, [doc.problem((), "expected a mapping of keys at the top of the file")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        return None, [problem_from_error(doc, model, error) for error in exc.errors()]


def problem_from_error(doc: YamlDocument, model: type[BaseModel], error: Any) -> Problem:
    loc = _without_tags(doc.data, tuple(part for part in error["loc"] if part != "[key]"))
    kind = error["type"]
    if kind == "union_tag_invalid":
        message = str(error["msg"])
        tag = error.get("ctx", {}).get("discriminator", "").strip("'")
        return doc.problem((*loc, tag) if tag else loc, message)
    if kind == "extra_forbidden":
        allowed = _keys_at(model, loc[:-1], doc.data)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = "unknown key"
        message += f"; did you mean {close[0]!r}?" if close else ""
        message += f" (allowed: {', '.join(allowed)})" if allowed and not close else ""
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error["msg"])
        given = error.get("input")
        if not isinstance(given, dict | list) and kind not in ("value_error", "assertion_error"):
            message += f" (got {given!r})"
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return doc.problem(loc, message)


def _without_tags(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the union tags pydantic puts in error locations (``buses.b1.modbus-rtu.port``)."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(data, dict) and part not in data and part in _tags_of(data):
            continue
        out.append(part)
        data = data.get(part) if isinstance(data, dict) else _item(data, part)
    return tuple(out)


def _tags_of(data: dict[Any, Any]) -> set[object]:
    return {data.get("type"), data.get("protocol")} - {None}


def _item(data: Any, part: str | int) -> Any:
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return None


def _keys_at(model: type[BaseModel], loc: tuple[str | int, ...], data: Any) -> list[str]:
    """The keys a model accepts at a location, to suggest the right spelling of a wrong one."""
    current: Any = model
    for part in (*loc, None):
        current = _resolve(current, data)
        if part is None:
            break
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return []
        data = data.get(part) if isinstance(data, dict) else _item(data, part)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _resolve(annotation: Any, data: Any) -> Any:
    """Unwrap Annotated and pick the union member whose tag the raw data carries."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [m for m in get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return _resolve(members[0], data)  # an optional section
    if get_origin(annotation) in (Union, UnionType) and isinstance(data, dict):
        tags = _tags_of(data)
        for member in get_args(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                for name in ("type", "protocol"):
                    field = member.model_fields.get(name)
                    if field is not None and set(get_args(field.annotation)) & tags:
                        return member
    return annotation
