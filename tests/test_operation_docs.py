"""The schema says what the processing code does: turns, ranges, defaults and output names
are stated once (``services.operations``), and the running service, the schema file,
its messages and docs/media.md all say the same."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLSchema,
    get_named_type,
    value_from_ast,
)
from graphql import build_schema as build_sdl
from PIL import Image

from gql_media.adapters import image_ops
from gql_media.services import operations as spec
from gql_media.services.processing import video_steps
from gql_media.settings import Settings
from tests.media import encoded, quadrants
from tests.support import LiveServer
from tests.test_media_api import PROCESS_IMAGE, PROCESS_VIDEO, follow, upload_stream

ROOT = Path(__file__).resolve().parent.parent
RED, GREEN, BLUE, WHITE = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255))


@pytest.fixture(scope="module")
def sdl() -> GraphQLSchema:
    """The schema as clients get it: the file codegen builds from (kept current by
    test_schema)."""
    return build_sdl((ROOT / "schema.graphql").read_text())


def input_type(sdl: GraphQLSchema, holder: str, field: str) -> GraphQLInputObjectType:
    holder_type = sdl.type_map[holder]
    assert isinstance(holder_type, GraphQLInputObjectType)
    named = get_named_type(holder_type.fields[field].type)
    assert isinstance(named, GraphQLInputObjectType)
    return named


def schema_fields(sdl: GraphQLSchema) -> list[tuple[spec.Spec, GraphQLInputObjectType]]:
    """Every operation of the spec with the input type the schema gives it."""
    pairs = [
        (op, input_type(sdl, "ImageOperationInput", op.name))
        for op in spec.IMAGE_OPERATIONS
        if op.params
    ]
    pairs += [
        (op, input_type(sdl, "VideoOperationInput", op.name))
        for op in spec.VIDEO_OPERATIONS
        if op.params
    ]
    variant = sdl.type_map["ImageVariantInput"]
    assert isinstance(variant, GraphQLInputObjectType)
    return [*pairs, (spec.VARIANT, variant)]


def default_of(field: GraphQLInputField) -> Any:
    node = field.ast_node
    if node is None or node.default_value is None:
        return None
    return value_from_ast(node.default_value, field.type)


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = image.convert("RGB").getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def near(colour: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(colour, expected, strict=True))


async def run_image(
    server: LiveServer, data: bytes, variants: list[dict[str, Any]]
) -> dict[str, Image.Image]:
    source = (await upload_stream(server, data, "q.png")).json()["media"]
    body = await server.graphql(
        PROCESS_IMAGE, {"input": {"mediaId": source["id"], "variants": variants}}
    )
    payload = body["data"]["processImage"]
    assert payload["userErrors"] == [], payload
    final = (await follow(server, payload["job"]["id"]))[-1]
    assert final["status"] == "SUCCEEDED", final
    images = {}
    for output in final["outputs"]:
        content = (await server.http.get(output["url"])).content
        images[output["name"]] = Image.open(io.BytesIO(content))
    return images


async def test_rotate_turns_clockwise_as_the_schema_says(
    server: LiveServer, sdl: GraphQLSchema
) -> None:
    degrees = input_type(sdl, "ImageOperationInput", "rotate").fields["degrees"]
    assert degrees.description is not None and degrees.description.startswith(
        "Angle to turn clockwise"
    )

    # red top-left, green top-right, blue bottom-left, white bottom-right
    wide = encoded(quadrants(80, 40), "PNG")
    turned = await run_image(
        server,
        wide,
        [
            {"name": "cw", "format": "PNG", "operations": [{"rotate": {"degrees": 90}}]},
            {"name": "ccw", "format": "PNG", "operations": [{"rotate": {"degrees": -90}}]},
        ],
    )
    cw, ccw = turned["cw"], turned["ccw"]
    assert cw.size == ccw.size == (40, 80)
    # a clockwise quarter turn brings the left edge to the top: blue top-left, red top-right
    assert near(pixel(cw, 5, 5), BLUE) and near(pixel(cw, 34, 5), RED)
    assert near(pixel(cw, 5, 74), WHITE) and near(pixel(cw, 34, 74), GREEN)
    assert near(pixel(ccw, 5, 5), GREEN) and near(pixel(ccw, 34, 5), WHITE)

    # the other path (a turn that keeps the canvas) turns the same way
    square = encoded(quadrants(60, 60), "PNG")
    kept = await run_image(
        server,
        square,
        [
            {
                "name": "kept",
                "format": "PNG",
                "operations": [{"rotate": {"degrees": 90, "expand": False}}],
            },
        ],
    )
    assert kept["kept"].size == (60, 60)
    assert near(pixel(kept["kept"], 5, 5), BLUE) and near(pixel(kept["kept"], 54, 5), RED)


def out_of_range(param: spec.Param) -> Any:
    assert param.high is not None
    return int(param.high) + 1 if float(param.high).is_integer() else param.high + 1


async def test_an_out_of_range_value_gets_the_range_the_schema_states(
    server: LiveServer, sdl: GraphQLSchema
) -> None:
    source = (await upload_stream(server, encoded(quadrants(32, 32), "PNG"), "q.png")).json()[
        "media"
    ]
    ranged = {
        op.name: {p.name: out_of_range(p) for p in op.params if p.high is not None}
        for op in (*spec.IMAGE_OPERATIONS, *spec.VIDEO_OPERATIONS)
    }
    needed = {"textWatermark": {"text": "x"}, "imageWatermark": {"mediaId": source["id"]}}
    variants = [
        {"name": f"v{i}", "operations": [{op.name: {**ranged[op.name], **needed.get(op.name, {})}}]}
        for i, op in enumerate(spec.IMAGE_OPERATIONS)
        if ranged[op.name]
    ]
    variants.append({"name": "encoded", "quality": out_of_range(spec.VARIANT["quality"])})
    image_body = await server.graphql(
        PROCESS_IMAGE, {"input": {"mediaId": source["id"], "variants": variants}}
    )
    messages = {e["field"]: e["message"] for e in image_body["data"]["processImage"]["userErrors"]}

    video_entries = [
        {"name": f"o{i}", op.name: {key: value}}
        for i, (op, (key, value)) in enumerate(
            (op, item) for op in spec.VIDEO_OPERATIONS for item in ranged[op.name].items()
        )
    ]
    video_body = await server.graphql(
        PROCESS_VIDEO, {"input": {"mediaId": source["id"], "operations": video_entries}}
    )
    errors = video_body["data"]["processVideo"]["userErrors"]
    messages.update({e["field"]: e["message"] for e in errors})

    checked = 0
    for op, schema_type in schema_fields(sdl):
        for param in op.params:
            if param.high is None:
                continue
            path = re.compile(
                rf"variants\.\d+\.{param.name}"
                if op == spec.VARIANT
                else rf"\w+\.\d+\.(operations\.0\.)?{op.name}\.{param.name}"
            )
            found = [m for f, m in messages.items() if path.fullmatch(f)]
            assert found == [param.out_of_range], (op.name, param.name, messages)
            description = schema_fields_description(schema_type, param.name)
            assert param.range in description and param.range in found[0]
            checked += 1
    assert checked >= 20
    bitrate = spec.ExtractAudio.spec["bitrate"]
    assert bitrate.out_of_range == "bitrate must be a number from 8000 to 512000 bits per second"


def schema_fields_description(schema_type: GraphQLInputObjectType, name: str) -> str:
    description = schema_type.fields[name].description
    assert description is not None, (schema_type.name, name)
    return description


def test_the_schema_states_what_the_spec_states(sdl: GraphQLSchema) -> None:
    for op, schema_type in schema_fields(sdl):
        assert {p.name for p in op.params} <= set(schema_type.fields), op.name
        if op != spec.VARIANT:
            assert schema_type.description == op.description, op.name
        for param in op.params:
            field = schema_type.fields[param.name]
            assert field.description == param.description, (op.name, param.name)
            default = default_of(field)
            expected = param.default
            if param.choices and expected is not None:
                expected = spec.enum_name(expected)
            assert default == expected, (op.name, param.name)
            values = get_named_type(field.type)
            if isinstance(values, GraphQLEnumType):
                allowed = {spec.enum_name(value) for value in param.values}
                # a video still is never AVIF: the one enum the service narrows
                narrowed = op == spec.VideoThumbnail.spec and param.name == "format"
                assert (
                    (allowed < set(values.values)) if narrowed else (allowed == set(values.values))
                ), (op.name, param.name)
                for value in param.values:
                    about = values.values[spec.enum_name(value)].description
                    assert about == param.choice_description(value), (op.name, value)
    name = sdl.type_map["VideoOperationInput"]
    assert isinstance(name, GraphQLInputObjectType)
    assert name.fields["name"].description == spec.OUTPUT_NAME.description


def test_the_processing_code_uses_the_stated_defaults() -> None:
    """The adapters' own defaults agree with the ones stated (the service passes them on)."""
    stated = {
        image_ops.Resize: spec.Resize.spec,
        image_ops.Rotate: spec.Rotate.spec,
        image_ops.TextWatermark: spec.TextWatermark.spec,
        image_ops.ImageWatermark: spec.ImageWatermark.spec,
    }
    for cls, op in stated.items():
        for f in dataclasses.fields(cls):
            name = "".join(part.title() if i else part for i, part in enumerate(f.name.split("_")))
            if f.default is dataclasses.MISSING or name not in {p.name for p in op.params}:
                continue
            assert f.default == op[name].default, (cls.__name__, f.name)
    output = image_ops.Output()
    assert output.progressive is spec.VARIANT["progressive"].default
    assert output.strip_metadata is spec.VARIANT["stripMetadata"].default

    settings = Settings()
    audio = [
        step.operation
        for step in video_steps(
            settings, [{"extractAudio": {"codec": c}, "name": c} for c in ("aac", "mp3", "opus")]
        )
    ]
    options = [op.options() for op in audio if isinstance(op, spec.ExtractAudio)]
    assert {o["codec"]: o["bitrate"] for o in options} == spec.AUDIO_BITRATES
    frame = video_steps(settings, [{"videoThumbnail": {}}])[0].operation
    assert isinstance(frame, spec.VideoThumbnail)
    assert frame.options()["fraction"] == spec.DEFAULT_FRACTION


async def test_each_video_operation_makes_its_documented_output_name(
    server: LiveServer, tmp_path: Path
) -> None:
    from tests.media import make_video

    video = make_video(tmp_path / "clip.mp4", seconds=1.0, width=64, height=48)
    source = (await upload_stream(server, video.read_bytes(), "clip.mp4")).json()["media"]
    body = await server.graphql(
        PROCESS_VIDEO,
        {
            "input": {
                "mediaId": source["id"],
                "operations": [
                    {"videoThumbnail": {}},
                    {"videoMetadata": True},
                    {"transcode": {"targetHeight": 16}},
                    {"extractAudio": {}},
                ],
            }
        },
    )
    payload = body["data"]["processVideo"]
    assert payload["userErrors"] == [], payload
    final = (await follow(server, payload["job"]["id"]))[-1]
    assert final["status"] == "SUCCEEDED", final
    documented = {op.output for op in spec.VIDEO_OPERATIONS if op.output is not None}
    assert {o["name"] for o in final["outputs"]} == documented == {"thumbnail", "video", "audio"}
    for op in spec.VIDEO_OPERATIONS:
        if op.output is not None:
            assert f"`{op.output}` for {op.name}" in spec.OUTPUT_NAME.description


async def test_an_animation_over_the_frame_limit_is_refused_with_the_limit_stated(
    server: LiveServer, sdl: GraphQLSchema
) -> None:
    frames = [Image.new("RGB", (2, 2), (RED, BLUE)[i % 2]) for i in range(image_ops.MAX_FRAMES + 1)]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20)
    refused = await upload_stream(server, gif, "long.gif")
    assert refused.status_code == 422, refused.text
    error = refused.json()["userErrors"][0]
    assert error["code"] == "TOO_MANY_PIXELS"
    limit = f"{image_ops.MAX_FRAMES} frames"
    assert limit in error["message"]
    process = sdl.type_map["ProcessImageInput"]
    assert isinstance(process, GraphQLInputObjectType)
    assert f"at most {limit}" in (process.fields["mediaId"].description or "")
    assert f"at most {limit}" in (ROOT / "docs" / "media.md").read_text()
