"""Input objects built from their GraphQL values by a plan made once per type (the
``strawberry_inputs`` patch).

Why: strawberry converts an input value field by field, resolving each field's type and GraphQL
name again on every request: about 0.1 ms for ``GenerateImageInput``, a tenth of the api's
CPU per submitted job. The plan keeps what does not change (names, and which fields hold
values graphql-core has already coerced: scalars, enums and lists of them) and hands the
rest (nested inputs) back to strawberry. It is installed through strawberry's ``from_input``
hook, so the result is the same object strawberry builds. Off, strawberry converts every input
value itself.

Internals relied on (checked by ``tests/test_patches.py``): ``StrawberryObjectDefinition``'s
``from_input`` hook (called as ``from_input(cls, value, InputContext)``), ``fields``,
``is_input``; ``StrawberryField.resolve_type``, ``python_name``, ``default_value``,
``default_factory``; ``InputContext.convert(value, type, name)``
(``strawberry.types.arguments``); ``strawberry.types.base``'s ``StrawberryList``,
``StrawberryOptional``, ``StrawberryMaybe``, ``StrawberryType``;
``strawberry.types.enum``'s ``StrawberryEnumDefinition`` and ``has_enum_definition``;
``strawberry.scalars.is_scalar``; the schema's ``schema_converter`` (``type_map``,
``scalar_registry``) and ``config.name_converter.from_field``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

import strawberry
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    StrawberryType,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition

Registry = Mapping[object, Any]
Builder = Callable[[type, Mapping[str, Any], InputContext], Any]


class Kind(enum.Enum):
    VALUE = "value"  # coerced by graphql-core already: taken as it is
    VALUES = "values"  # a list of such: copied, as strawberry does
    CONVERT = "convert"  # anything else: strawberry converts it


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    graphql_name: str
    python_name: str
    type: StrawberryType | type
    kind: Kind


def _required(type_: Any) -> Any:
    """``type_`` without its nullability (``Maybe`` stays: strawberry checks its nulls)."""
    if isinstance(type_, StrawberryOptional) and not isinstance(type_, StrawberryMaybe):
        return type_.of_type
    return type_


def _is_value(type_: Any, registry: Registry) -> bool:
    return (
        is_scalar(type_, registry)
        or isinstance(type_, StrawberryEnumDefinition)
        or has_enum_definition(type_)
    )


def _kind(type_: StrawberryType | type, registry: Registry) -> Kind:
    type_ = _required(type_)
    if isinstance(type_, StrawberryList):
        return Kind.VALUES if _is_value(_required(type_.of_type), registry) else Kind.CONVERT
    return Kind.VALUE if _is_value(type_, registry) else Kind.CONVERT


def plan(
    definition: StrawberryObjectDefinition, schema: strawberry.Schema
) -> tuple[list[Field], dict[str, None]] | None:
    """The fields of an input type, and the implicit None of those without a default (what
    strawberry passes for an omitted nullable field); None for a type this cannot build
    (one with ``Maybe`` fields, whose nulls strawberry checks while converting)."""
    registry = schema.schema_converter.scalar_registry
    fields: list[Field] = []
    implicit: dict[str, None] = {}
    for field in definition.fields:
        type_ = field.resolve_type(type_definition=definition)
        if isinstance(type_, StrawberryMaybe):
            return None
        fields.append(
            Field(
                schema.config.name_converter.from_field(field),
                field.python_name,
                type_,
                _kind(type_, registry),
            )
        )
        if field.default_value is dataclasses.MISSING and (
            field.default_factory is dataclasses.MISSING
        ):
            implicit[field.python_name] = None
    return fields, implicit


def builder(fields: list[Field], implicit: dict[str, None]) -> Builder:
    def build(cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        kwargs: dict[str, Any] = dict(implicit)
        for field in fields:
            if field.graphql_name not in value:
                continue
            item = value[field.graphql_name]
            if field.kind is Kind.VALUE or item is None:
                kwargs[field.python_name] = item
            elif field.kind is Kind.VALUES:
                # graphql-core hands every request that omits a list the same default list
                kwargs[field.python_name] = list(item)
            else:
                kwargs[field.python_name] = context.convert(item, field.type, field.graphql_name)
        return cls(**kwargs)

    _PLANNED.add(build)
    return build


_PLANNED: set[Builder] = set()  # the builders made here, to tell them from other hooks


def install(schema: strawberry.Schema) -> None:
    """Give every input type of ``schema`` that has no ``from_input`` of its own a planned
    one. The hook lives on the type, so every schema built from it shares the plan: they
    must name fields alike (ours all use the default name converter)."""
    for concrete in schema.schema_converter.type_map.values():
        definition = concrete.definition
        if not isinstance(definition, StrawberryObjectDefinition) or not definition.is_input:
            continue
        if definition.from_input is not None:
            continue
        planned = plan(definition, schema)
        if planned is not None:
            definition.from_input = builder(*planned)


def uninstall(schema: strawberry.Schema) -> None:
    """Take the planned ``from_input`` off every input type of ``schema`` (a schema built
    with the patch off, in a process where one with it on gave its types the plan)."""
    for concrete in schema.schema_converter.type_map.values():
        definition = concrete.definition
        if isinstance(definition, StrawberryObjectDefinition) and (
            definition.from_input in _PLANNED
        ):
            definition.from_input = None
