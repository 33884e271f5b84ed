"""The GraphQL enums and value types of operation fields (``services.operations``), shared
by the inputs that submit operations and the types that show them stored."""

from __future__ import annotations

import enum
import functools
from typing import Any, Optional

import strawberry

from gql_media.services import operations as ops


@functools.cache
def enum_of(choices: ops.Choices) -> type[enum.Enum]:
    """The GraphQL enum of ``choices``: each value by its ``enum_name``, described."""
    members = {
        ops.enum_name(value): strawberry.enum_value(value, description=about or None)
        for value, about in choices.values
    }
    values = enum.Enum(choices.name, members)  # type: ignore[misc]
    return strawberry.enum(values, description=choices.description)


def value_type(param: ops.Param) -> Any:
    """The GraphQL type of a field: its enum, Int, Float, Boolean, ID or String; nullable
    where the field takes null."""
    kinds: dict[str, Any] = {"int": int, "float": float, "bool": bool, "media": strawberry.ID}
    base = enum_of(param.choices) if param.choices else kinds.get(param.kind, str)
    return Optional[base] if param.nullable else base  # noqa: UP045 (a NewType among them)


def snake(name: str) -> str:
    """The Python name of an operation's key: ``autoOrient`` → ``auto_orient``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
