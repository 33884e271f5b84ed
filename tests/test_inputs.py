"""Input objects built by the planned ``from_input`` hooks equal what strawberry builds."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import strawberry
from graphql import GraphQLInputObjectType, coerce_input_value
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryObjectDefinition

from gql_media.api.patches import strawberry_inputs as inputs
from gql_media.api.schema import build_schema
from gql_media.settings import Settings

SCHEMA = build_schema(Settings())

CASES: list[tuple[str, dict[str, Any]]] = [
    ("GenerateImageInput", {"prompt": "a fox"}),
    (
        "GenerateImageInput",
        {
            "prompt": "a fox",
            "negativePrompt": "rain",
            "provider": "mock",
            "model": "m",
            "width": 64,
            "height": 32,
            "numOutputs": 2,
            "seed": 7,
            "outputFormat": "WEBP",
            "extra": {"steps": [1, 2], "nested": {"a": None}},
            "idempotencyKey": "k",
            "webhookUrl": "https://example.com/hook",
        },
    ),
    (
        "ProcessImageInput",
        {
            "mediaId": "0b6c1e4e-3c55-4c53-9a5e-2f0f7f1f9d10",
            "variants": [
                {"name": "empty"},
                {
                    "name": "all",
                    "operations": [
                        {"resize": {"width": 10, "fit": "COVER", "upscale": True}},
                        {"thumbnail": {"size": 5}},
                        {"crop": {"width": 3, "height": 4}},
                        {"rotate": {"degrees": 90.5, "background": "#000"}},
                        {"autoOrient": True},
                        {"textWatermark": {"text": "hi", "position": "TOP_LEFT"}},
                        {"imageWatermark": {"mediaId": "x", "opacity": 1.0}},
                    ],
                    "format": "JPEG",
                    "quality": 80,
                    "stripMetadata": False,
                },
            ],
        },
    ),
    (
        "ProcessVideoInput",
        {
            "mediaId": "m",
            "operations": [
                {"name": "t", "videoThumbnail": {"fraction": 0.5}},
                {"videoMetadata": True},
                {"transcode": {"targetHeight": 240, "quality": "LOW"}},
                {"extractAudio": {"codec": "MP3", "bitrate": 128000}},
            ],
        },
    ),
    ("JobFilter", {}),
    (
        "JobFilter",
        {
            "status": ["QUEUED", "RUNNING"],
            "kind": "PROCESS_IMAGE",
            "provider": None,
            "createdAfter": "2026-01-02T03:04:05+00:00",
        },
    ),
]


def _coerced(name: str, value: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    graphql_type = SCHEMA._schema.get_type(name)
    assert isinstance(graphql_type, GraphQLInputObjectType)
    cls = SCHEMA.get_type_by_name(name)
    assert isinstance(cls, StrawberryObjectDefinition)
    coerced = coerce_input_value(value, graphql_type)
    assert isinstance(coerced, dict), f"not a valid {name}"
    return cls.origin, coerced


@contextlib.contextmanager
def _strawberry_conversion() -> Iterator[None]:
    """Every input type without the planned hook, for the duration."""
    saved = {}
    for concrete in SCHEMA.schema_converter.type_map.values():
        definition = concrete.definition
        if isinstance(definition, StrawberryObjectDefinition) and definition.is_input:
            saved[definition.name] = definition
            definition.__dict__["_saved_from_input"] = definition.from_input
            definition.from_input = None
    try:
        yield
    finally:
        for definition in saved.values():
            definition.from_input = definition.__dict__.pop("_saved_from_input")


def _convert(cls: type, value: dict[str, Any]) -> Any:
    registry = SCHEMA.schema_converter.scalar_registry
    return convert_argument(value, cls, registry, SCHEMA.config)


def test_every_input_type_of_ours_is_planned() -> None:
    planned = [
        c.definition.name
        for c in SCHEMA.schema_converter.type_map.values()
        if isinstance(c.definition, StrawberryObjectDefinition)
        and c.definition.is_input
        and c.definition.from_input is not None
    ]
    assert {"GenerateImageInput", "ProcessImageInput", "JobFilter"} <= set(planned)


@pytest.mark.parametrize(("name", "value"), CASES)
def test_planned_inputs_equal_strawberrys(name: str, value: dict[str, Any]) -> None:
    cls, coerced = _coerced(name, value)
    planned = _convert(cls, coerced)
    with _strawberry_conversion():
        expected = _convert(cls, coerced)
    assert type(planned) is type(expected)
    assert planned == expected


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("ImageVariantInput", {"name": "a"}, "operations"),  # graphql-core's shared default
        ("JobFilter", {"status": ["QUEUED"]}, "status"),  # a list of enums, taken as given
    ],
)
def test_each_built_input_has_its_own_lists(name: str, value: dict[str, Any], field: str) -> None:
    cls, coerced = _coerced(name, value)
    first, second = _convert(cls, coerced), _convert(cls, coerced)
    getattr(first, field).append("changed")
    assert "changed" not in getattr(second, field)


@strawberry.input
class Note:
    text: str | None


@strawberry.type
class EchoQuery:
    @strawberry.field
    def echo(self, note: Note) -> str:
        return repr(note.text)


def test_an_omitted_field_without_a_default_is_none() -> None:
    schema = strawberry.Schema(query=EchoQuery)
    inputs.install(schema)
    definition = schema.get_type_by_name("Note")
    assert isinstance(definition, StrawberryObjectDefinition)
    assert definition.from_input is not None
    result = schema.execute_sync("{ echo(note: {}) }")
    assert result.errors is None
    assert result.data == {"echo": "None"}
