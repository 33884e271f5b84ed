"""Typed parameters, results and metadata read from stored JSON: every field of the
operations' definitions, defaults filled in, and leniently."""

from __future__ import annotations

from gql_media.api.job_details import (
    AudioVideoMetadata,
    ImageMetadata,
    MediaKind,
    metadata_of,
    parameters_of,
)
from gql_media.domain import JobKind


def test_stored_operations_read_leniently_with_their_defaults() -> None:
    stored = {
        "mediaId": "med_1",
        "variants": [
            {
                "name": "a",
                "format": "TIFF",  # not offered (any more)
                "operations": [{"resize": {"width": 10, "fit": "sideways"}}, {"transcode": {}}],
            },
            "not a variant",
        ],
    }
    asked = parameters_of(JobKind.PROCESS_IMAGE, stored)
    assert asked.media_id == "med_1"
    variant, blank = asked.variants
    assert (variant.name, variant.format, variant.progressive) == ("a", None, False)
    resize = variant.operations[0].resize
    assert (resize.width, resize.height, resize.fit.value, resize.upscale) == (
        10,
        None,
        "contain",
        False,
    )
    other = variant.operations[1]  # a video operation: left out
    assert all(getattr(other, name) is None for name in ("resize", "thumbnail", "auto_orient"))
    assert (blank.name, blank.operations, blank.strip_metadata) == (None, [], True)


def test_video_steps_keep_their_names_and_flag_operations_without_fields() -> None:
    stored = {
        "mediaId": "med_2",
        "operations": [{"videoMetadata": True}, {"name": "x", "transcode": {}}],
    }
    first, second = parameters_of(JobKind.PROCESS_VIDEO, stored).operations
    assert (first.name, first.video_metadata, first.transcode) == (None, True, None)
    assert (second.name, second.transcode.quality.value, second.transcode.target_height) == (
        "x",
        "medium",
        None,
    )


def test_metadata_by_kind() -> None:
    image = metadata_of({"kind": "image", "format": "GIF", "frames": 12})
    assert image == ImageMetadata(kind=MediaKind.IMAGE, format="GIF", frames=12)
    audio = metadata_of({"kind": "audio", "container": "ogg", "duration": 1.5, "channels": 2})
    assert isinstance(audio, AudioVideoMetadata)
    assert (audio.kind, audio.duration, audio.rotation, audio.width) == (
        MediaKind.AUDIO,
        1.5,
        0,
        None,
    )
    assert metadata_of(None) is None and metadata_of({"kind": "font"}) is None
