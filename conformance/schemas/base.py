"""The shared ground of the format models: a strict table, and pydantic's errors in the suite's words.

Every format model derives from :class:`Table` (strict types, unknown keys refused, so the
generated JSON Schema says ``additionalProperties: false``). A model may word its own errors in
``messages``, keyed ``"field.error_type"`` or ``"error_type"`` (for any of its fields); templates
may use ``{input}``, ``{expected}``, ``{key}`` (the field's name) and ``{allowed}`` (the model's
keys). :func:`problems` turns a
``ValidationError`` into ``(field path, message)`` pairs, one per problem, so that callers raise
their own one-line-per-problem errors and a user never sees pydantic's dump.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# What each of pydantic's type errors expected, in a case-file author's words.
_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
    "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table", "list_type": "a list",
    "tuple_type": "a list", "int_from_float": "an integer", "int_parsing": "an integer",
}


def _drop_null(schema: dict[str, Any]) -> None:
    options = [o for o in schema.pop("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options


def Absent(**kwargs: Any) -> Any:  # noqa: N802 (used like Field)
    """A key that may be left out, with no null in the schema: TOML has no null, and the writers omit it.
    (``X | None`` keeps validation untagged, so error paths stay as the file spells them.)"""
    return Field(default=None, json_schema_extra=_drop_null, **kwargs)


class Table(BaseModel):
    """A strict TOML table / JSON object: no coercion, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    messages: ClassVar[dict[str, str]] = {}


def _inner(annotation: Any) -> Any:
    """The model inside ``Annotated[...]``, ``X | None``, ``list[X]``, ``dict[str, X]``, if any."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _inner(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        inner = [_inner(a) for a in typing.get_args(annotation) if a is not type(None)]
        return next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if origin in (list, tuple, dict, Sequence, Mapping):
        args = typing.get_args(annotation)
        return _inner(args[-1]) if args else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _keys(model: type[BaseModel]) -> dict[str, str]:
    """The model's keys as written in a file (aliases), each with its field's name."""
    return {field.alias or name: name for name, field in model.model_fields.items()}


def _owner(root: type[BaseModel], loc: Sequence[int | str]) -> tuple[type[BaseModel], str | None]:
    """The model that holds the last named key of ``loc``, and that key."""
    model, key = root, None
    for index, part in enumerate(loc):
        if not isinstance(part, str):
            continue
        if part not in _keys(model):
            return model, part
        key = part
        inner = _inner(model.model_fields[_keys(model)[part]].annotation)
        if inner is None or index == len(loc) - 1:
            return model, key
        model = inner
    return model, key


def _path(loc: Sequence[int | str], data: Any) -> str:
    """``divergence[0].when.dim``. An index into a value the user wrote as a single item (a lone value
    that stands for a list of one alternative) is left out: it is not in the file."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            if isinstance(data, list):
                text += f"[{part}]"
                data = data[part] if part < len(data) else None
            continue
        text += f".{part}" if text else part
        data = data.get(part) if isinstance(data, Mapping) else None
    return text


def _message(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    model, key = _owner(root, loc)
    value = error.get("input")
    fields = {
        "input": repr(value), "expected": ctx.get("expected", ""), "key": key or "",
        "allowed": ", ".join(_keys(model)),
    }
    for template_key in (f"{key}.{kind}", kind):
        template = getattr(model, "messages", {}).get(template_key)
        if template is not None:
            return str(template.format(**fields))
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return f"unknown key; expected one of {fields['allowed']}"
    if kind == "literal_error":
        return f"expected {fields['expected']}, got {value!r}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {value!r}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind == "too_short":
        return "must not be empty"
    for bound, words in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx:
            return f"must be {words} {ctx[bound]}, got {value!r}"
    return str(error["msg"])


def problems(exc: ValidationError, root: type[BaseModel], data: Any) -> list[tuple[str, str]]:
    """``(field path, message)`` for every problem pydantic found, in the order it found them."""
    return [(_path(e["loc"], data), _message(e, root)) for e in exc.errors(include_url=False)]


def one_line_each(found: Sequence[tuple[str, str]]) -> str:
    """The problems after the first, one per line (the first goes into the error's own field and message)."""
    return "".join(f"\n  and field {path or '(top level)'}: {message}" for path, message in found[1:])
