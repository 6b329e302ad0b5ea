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


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _nested_model(arg)
        if model is not None:
            return model
    return None


def _rows(
    model: type[BaseModel], prefix: str, parents: tuple[type[BaseModel], ...] = ()
) -> list[tuple[str, str, str, str]]:
    """One row per field, nested sections expanded; a section that contains itself (a mixture
    made of mixtures) is listed once, not expanded forever."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        is_list = typing.get_origin(field.annotation) is list
        description = (field.description or "").replace("|", "\\|")
        rows.append((path, _type_name(field.annotation), _default(field), description))
        if nested is not None and nested is not model and nested not in parents:
            rows.extend(_rows(nested, f"{path}[]." if is_list else f"{path}.", (*parents, model)))
    return rows


def config_reference_markdown() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for path, type_name, default, description in _rows(WinnowConfig, ""):
        lines.append(f"| `{path}` | {type_name} | {default} | {description} |")
    return "\n".join(lines)
