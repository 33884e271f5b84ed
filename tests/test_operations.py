"""The operations of processImage and processVideo are one typed model: read from JSON with
every problem at its path, written back as the JSON they were read from, and rows stored
before read as they always were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gql_media.adapters import image_ops
from gql_media.errors import ErrorCode
from gql_media.services import operations as ops
from gql_media.settings import Settings

SETTINGS = Settings()

# processImage variants as the api stored them: the client's fields with strawberry's
# defaults filled in, enums by their stored values, nulls left out
STORED_VARIANTS: list[dict[str, Any]] = [
    {
        "name": "thumb",
        "operations": [{"thumbnail": {"size": 256}}],
        "format": "WEBP",
        "quality": 80,
        "progressive": False,
        "stripMetadata": True,
    },
    {
        "name": "web",
        "operations": [
            {"resize": {"width": 1600, "height": 1200, "fit": "inside", "upscale": False}},
            {"crop": {"left": 0, "top": 0, "width": 10, "height": 20}},
            {"rotate": {"degrees": 90.5, "expand": True, "background": "#000"}},
            {"autoOrient": True},
            {
                "textWatermark": {
                    "text": "© me",
                    "position": "bottom-right",
                    "margin": 16,
                    "opacity": 0.6,
                    "scale": 0.05,
                    "color": "#ffffff",
                }
            },
            {
                "imageWatermark": {
                    "mediaId": "med_1",
                    "position": "top-left",
                    "margin": 4,
                    "opacity": 1.0,
                    "scale": 0.2,
                }
            },
        ],
        "progressive": True,
        "stripMetadata": False,
    },
]
STORED_VIDEO: list[dict[str, Any]] = [
    {"videoThumbnail": {"fraction": 0.5, "maxSize": 640, "format": "JPEG"}},
    {"videoMetadata": True},
    {"name": "720p", "transcode": {"targetHeight": 720, "quality": "medium"}},
    {"extractAudio": {"codec": "opus"}},
]


def read_variants(raw: Any) -> tuple[list[ops.Variant], ops.Reading]:
    reading = ops.Reading()
    return ops.read_variants(SETTINGS, raw, reading), reading


def read_video(raw: Any) -> tuple[list[ops.VideoStep], ops.Reading]:
    reading = ops.Reading()
    return ops.read_video_steps(SETTINGS, raw, reading), reading


def test_a_stored_image_job_reads_into_the_model_and_writes_back_the_same() -> None:
    variants, reading = read_variants(STORED_VARIANTS)
    assert reading.errors == []
    assert reading.media == [("variants.1.operations.5.imageWatermark.mediaId", "med_1")]
    web = variants[1]
    assert web.operations[0] == ops.Resize(width=1600, height=1200, fit="inside")
    assert web.operations[2] == ops.Rotate(degrees=90.5, background="#000")
    assert isinstance(web.operations[3], ops.AutoOrient)
    assert web.media_ids() == {"med_1"}
    assert (web.progressive, web.strip_metadata, web.format, web.quality) == (
        True,
        False,
        None,
        None,
    )
    assert ops.variants_json(variants) == STORED_VARIANTS


def test_a_stored_video_job_reads_into_the_model_and_writes_back_the_same() -> None:
    steps, reading = read_video(STORED_VIDEO)
    assert reading.errors == []
    assert [step.output for step in steps] == ["thumbnail", None, "720p", "audio"]
    assert steps[3].operation == ops.ExtractAudio(codec="opus")
    assert ops.video_steps_json(steps) == STORED_VIDEO


def test_omitted_fields_take_the_stated_defaults() -> None:
    (variant,), reading = read_variants(
        [
            {
                "name": "v",
                "operations": [{"textWatermark": {"text": "hi"}}, {"rotate": {"degrees": 9}}],
            }
        ]
    )
    assert reading.errors == []
    mark, turn = variant.operations
    assert mark == ops.TextWatermark(text="hi")
    assert isinstance(mark, ops.TextWatermark)
    spec = ops.TextWatermark.spec
    assert (mark.position, mark.margin, mark.opacity) == (
        spec["position"].default,
        spec["margin"].default,
        spec["opacity"].default,
    )
    # null and "" are the stated default, as the schema's nullable field says
    assert isinstance(turn, ops.Rotate) and turn.background == ops.Rotate.spec["background"].default
    (step,), _ = read_video([{"extractAudio": {"codec": "mp3"}}])
    assert isinstance(step.operation, ops.ExtractAudio)
    assert step.operation.options()["bitrate"] == ops.AUDIO_BITRATES["mp3"]


def test_the_adapters_get_what_the_model_holds(tmp_path: Path) -> None:
    variants, _ = read_variants(STORED_VARIANTS)
    files = {"med_1": tmp_path / "mark.png"}
    web = variants[1].to_adapter(files.__getitem__)
    assert web.output == image_ops.Output(None, None, True, False)
    assert web.operations[0] == image_ops.Resize(1600, 1200, "inside", False)
    assert web.operations[5] == image_ops.ImageWatermark(tmp_path / "mark.png", "top-left", 4, 1.0)


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ({"resize": {"fit": "cover"}}, "resize", "resize needs a width, a height or both"),
        ({"resize": {"width": 0}}, "resize.width", ops.Resize.spec["width"].out_of_range),
        ({"resize": {"width": True}}, "resize.width", ops.Resize.spec["width"].out_of_range),
        (
            {"resize": {"width": 5, "fit": "squash"}},
            "resize.fit",
            "fit must be one of contain, cover, fill, inside",
        ),
        ({"thumbnail": {}}, "thumbnail.size", "size is required"),
        (
            {"textWatermark": {"text": " "}},
            "textWatermark.text",
            "text must be 1 to 200 characters",
        ),
        (
            {"textWatermark": {"text": "x" * 201}},
            "textWatermark.text",
            "variants.0.operations.0.textWatermark.text is longer than 200 characters",
        ),
        (
            {"rotate": {"degrees": 1, "background": 7}},
            "rotate.background",
            "background must be a string",
        ),
        ({"sharpen": {}}, "sharpen", "unknown operation 'sharpen'"),
        ({"thumbnail": {"size": 9}, "crop": {}}, "", "give exactly one operation per entry"),
    ],
)
def test_each_problem_is_reported_at_its_path(entry: Any, field: str, message: str) -> None:
    _, reading = read_variants([{"name": "v", "operations": [entry]}])
    path = "variants.0.operations.0" + (f".{field}" if field else "")
    assert [(e.field, e.message, e.code) for e in reading.errors] == [
        (path, message, ErrorCode.INVALID_ARGUMENT)
    ]


def test_video_rules_and_output_names() -> None:
    _, reading = read_video(
        [
            {"videoThumbnail": {"at": 1.0, "fraction": 0.5}},
            {"videoThumbnail": {"format": "AVIF"}},
            {"name": "video", "transcode": {}},
            {"name": "bad name", "extractAudio": {}},
            {"name": "ignored name!", "videoMetadata": True},
        ]
    )
    assert [(e.field, e.message) for e in reading.errors] == [
        ("operations.0.videoThumbnail", "give at or fraction, not both"),
        ("operations.1.videoThumbnail.format", "format must be one of JPEG, PNG, WEBP"),
        ("operations.1.name", "output name 'thumbnail' is used twice"),
        ("operations.3.name", "name: 1-64 letters, digits, '-' or '_'"),
    ]


def test_missing_watermarks_are_not_found() -> None:
    _, reading = read_variants(STORED_VARIANTS)
    reading.missing_media(set(), "watermark media not found")
    assert [(e.field, e.code) for e in reading.errors] == [
        ("variants.1.operations.5.imageWatermark.mediaId", ErrorCode.NOT_FOUND)
    ]
