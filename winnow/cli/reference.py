"""Markdown config reference generated from the pydantic models (the README embeds it)."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from winnow.config import WinnowConfig


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return f"list[{_type_name(inner)}]"
    if origin is dict:
        key, value = typing.get_args(annotation) or (Any, Any)
        return f"dict[{_type_name(key)}, {_type_name(value)}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{json.dumps(value, default=str)}`"


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """Every section class an annotation can hold (all members of a union, e.g. the scorer backends)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += [model for model in _nested_models(arg) if model not in found]
    return found


def _tag(model: type[BaseModel]) -> str | None:
    """``backend: x`` for a member of a union discriminated by a literal field."""
    field = model.model_fields.get("backend")
    if field is not None and typing.get_origin(field.annotation) is typing.Literal:
        return f"backend `{typing.get_args(field.annotation)[0]}`"
    return None


def _rows(
    model: type[BaseModel], prefix: str, parents: tuple[type[BaseModel], ...] = ()
) -> list[tuple[str, str, str, str]]:
    """One row per field, nested sections expanded; a section that contains itself (a mixture
    made of mixtures) is listed once, not expanded forever. The members of a union (the scorer
    backends) are all listed: rows they share once, the others marked with their tag."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        is_list = typing.get_origin(field.annotation) is list
        description = (field.description or "").replace("|", "\\|")
        rows.append((path, _type_name(field.annotation), _default(field), description))
        nested = [m for m in _nested_models(field.annotation) if m is not model and m not in parents]
        child = f"{path}[]." if is_list else f"{path}."
        member_rows = [(m, _rows(m, child, (*parents, model))) for m in nested]
        if len(member_rows) <= 1:
            rows.extend(row for _, found in member_rows for row in found)
            continue
        shared = set.intersection(*(set(found) for _, found in member_rows))
        seen: set[tuple[str, str, str, str]] = set()
        for member, found in member_rows:
            for row in found:
                if row in shared:
                    if row not in seen:
                        seen.add(row)
                        rows.append(row)
                elif row[0] != f"{child}backend":
                    rows.append((row[0], row[1], row[2], f"({_tag(member) or member.__name__}) {row[3]}"))
        backends = [_tag(m) for m, _ in member_rows]
        if all(backends):
            names = ", ".join(b.split(" ", 1)[1] for b in backends if b)
            rows.append((f"{child}backend", "string", "required", f"Which backend: {names}."))
    return rows


def config_reference_markdown() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for path, type_name, default, description in _rows(WinnowConfig, ""):
        lines.append(f"| `{path}` | {type_name} | {default} | {description} |")
    return "\n".join(lines)
