"""What a job was asked and what it found, typed: ``Job.parameters``, ``Job.result`` and
``MediaAsset.metadata``, read from the JSON the services store.

A processing job's parameters mirror the inputs that submitted them (``media_types``): the
same field names, each operation an entry with one field set, derived from the same
operation definitions (``services.operations``). Stored JSON is read leniently: a field
left out, or a choice this version does not offer, reads as its default; an operation of
another kind is left out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, Optional

import strawberry
from strawberry.scalars import JSON

from gql_media import domain
from gql_media.api import enums  # noqa: F401 (OutputFormat's definition, before it is used)
from gql_media.api.choices import enum_of, snake, value_type
from gql_media.services import operations as ops


def _object(name: str, description: str, fields: dict[str, tuple[Any, str]]) -> type:
    """A GraphQL object type ``name`` with ``fields`` (Python name → type, description)."""
    namespace: dict[str, Any] = {"__module__": __name__}
    namespace["__annotations__"] = {field: kind for field, (kind, _) in fields.items()}
    for field, (_, about) in fields.items():
        namespace[field] = strawberry.field(default=None, description=about or None)
    return strawberry.type(type(name, (), namespace), description=description)


def _value(param: ops.Param, data: dict[str, Any]) -> Any:
    value = data.get(param.name)
    if value is None:
        value = param.default
    if param.choices and value is not None:
        values = enum_of(param.choices)
        try:
            return values(value)
        except ValueError:  # a value this version does not offer
            return None if param.default is None else values(param.default)
    return strawberry.ID(str(value)) if param.kind == "media" and value is not None else value


def _fields(model: type[ops.Model]) -> dict[str, tuple[Any, str]]:
    return {p.python_name: (value_type(p), p.description) for p in model.spec.params}


def _read(cls: type, model: type[ops.Model], data: Any, **given: Any) -> Any:
    """An instance of ``cls`` (the type of ``model``) from its stored JSON ``data``."""
    data = data if isinstance(data, dict) else {}
    values = {p.python_name: _value(p, data) for p in model.spec.params}
    return cls(**{**values, **given})


_TYPES = {
    model: _object(model.__name__, model.spec.description, _fields(model))
    for model in (*ops.IMAGE_MODELS, *ops.VIDEO_MODELS)
    if model.spec.params
}


def _entry_type(
    type_name: str,
    description: str,
    models: tuple[type[ops.Model], ...],
    **own: tuple[Any, str],
) -> type:
    """An entry of a list of operations: one field per operation (its type, or a Boolean
    for one without fields), exactly one of them set."""
    fields = dict(own)
    for model in models:
        kind = _TYPES.get(model, bool)
        fields[snake(model.spec.name)] = (Optional[kind], model.spec.description)  # noqa: UP045
    return _object(type_name, description, fields)


ImageOperation = _entry_type("ImageOperation", "Exactly one operation is set.", ops.IMAGE_MODELS)
VideoOperation = _entry_type(
    "VideoOperation",
    "Exactly one operation is set; name is the output's name as given.",
    ops.VIDEO_MODELS,
    name=(Optional[str], ops.OUTPUT_NAME.description),  # noqa: UP045
)
ImageVariant = _object(
    "ImageVariant",
    ops.VARIANT.description,
    {
        "name": (str, ops.VARIANT["name"].description),
        "operations": (list[ImageOperation], "The operations, in order."),  # type: ignore[valid-type]
        **{k: v for k, v in _fields(ops.Variant).items() if k != "name"},
    },
)
_IMAGE = {model.spec.name: model for model in ops.IMAGE_MODELS}
_VIDEO = {model.spec.name: model for model in ops.VIDEO_MODELS}


def _entry(cls: type, models: Mapping[str, type[ops.Model]], raw: Any, **given: Any) -> Any:
    """The entry type ``cls`` from a stored entry, ``{"resize": {...}}``; a key that names
    none of ``models`` is left out."""
    values: dict[str, Any] = dict(given)
    for key, data in raw.items() if isinstance(raw, dict) else ():
        model = models.get(key)
        if model is not None:
            kind = _TYPES.get(model)
            values[snake(key)] = _read(kind, model, data) if kind else True
    return cls(**values)


def _variant(raw: Any) -> Any:
    raw = raw if isinstance(raw, dict) else {}
    operations = [_entry(ImageOperation, _IMAGE, entry) for entry in raw.get("operations") or ()]
    return _read(ImageVariant, ops.Variant, raw, operations=operations)


def _video_step(raw: Any) -> Any:
    name = raw.get("name") if isinstance(raw, dict) else None
    return _entry(VideoOperation, _VIDEO, raw, name=name if isinstance(name, str) else None)


@strawberry.type(description="What a generateImage job was asked to make.")
class GenerateImageParameters:
    negative_prompt: str | None
    width: int
    height: int
    num_outputs: int
    seed: int = strawberry.field(description="The seed given, or the one drawn for it.")
    output_format: domain.OutputFormat
    extra: JSON | None = strawberry.field(
        description="The provider-specific options given, as given."
    )


ProcessImageParameters = _object(
    "ProcessImageParameters",
    "What a processImage job was asked to make.",
    {
        "media_id": (strawberry.ID, "The upload it processes."),
        "variants": (list[ImageVariant], ""),  # type: ignore[valid-type]
    },
)
ProcessVideoParameters = _object(
    "ProcessVideoParameters",
    "What a processVideo job was asked to do.",
    {
        "media_id": (strawberry.ID, "The upload it processes."),
        "operations": (list[VideoOperation], ""),  # type: ignore[valid-type]
    },
)
JobParameters = Annotated[
    GenerateImageParameters | ProcessImageParameters | ProcessVideoParameters,  # type: ignore[valid-type]
    strawberry.union("JobParameters", description="What a job was asked; by the job's kind."),
]


def _generation(data: dict[str, Any]) -> GenerateImageParameters:
    extra = data.get("extra")
    return GenerateImageParameters(
        negative_prompt=data.get("negativePrompt"),
        width=int(data.get("width") or 0),
        height=int(data.get("height") or 0),
        num_outputs=int(data.get("numOutputs") or 0),
        seed=int(data.get("seed") or 0),
        output_format=domain.OutputFormat(data.get("outputFormat") or "PNG"),
        extra=extra if extra else None,
    )


def parameters_of(kind: domain.JobKind, data: dict[str, Any]) -> Any:
    """The typed parameters of a job of ``kind`` from its stored ``data``."""
    if kind is domain.JobKind.GENERATE_IMAGE:
        return _generation(data)
    media_id = strawberry.ID(str(data.get("mediaId") or ""))
    if kind is domain.JobKind.PROCESS_IMAGE:
        variants = [_variant(raw) for raw in data.get("variants") or ()]
        return ProcessImageParameters(media_id=media_id, variants=variants)
    steps = [_video_step(raw) for raw in data.get("operations") or ()]
    return ProcessVideoParameters(media_id=media_id, operations=steps)


@strawberry.enum(description="What a media file holds.")
class MediaKind(enum.Enum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


@strawberry.type(description="What is known of an image.")
class ImageMetadata:
    kind: MediaKind
    format: str = strawberry.field(description="Its encoding, e.g. JPEG, PNG, GIF, WEBP, AVIF.")
    frames: int = strawberry.field(description="1, or the frames of an animation.")


@strawberry.type(description="What is known of a video or audio file.")
class AudioVideoMetadata:
    kind: MediaKind
    container: str = strawberry.field(description="e.g. mp4, matroska, ogg, mp3.")
    duration: float | None = strawberry.field(description="Seconds.")
    width: int | None = strawberry.field(description="As displayed (rotation applied).")
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None
    bitrate: int | None = strawberry.field(description="Bits per second.")
    rotation: int = strawberry.field(description="Clockwise degrees a player turns the picture.")
    sample_rate: int | None = strawberry.field(description="Audio samples per second.")
    channels: int | None


MediaMetadata = Annotated[
    ImageMetadata | AudioVideoMetadata,
    strawberry.union("MediaMetadata", description="What is known of a media file."),
]
_AV_FIELDS = {  # Python name → stored name
    "container": "container",
    "duration": "duration",
    "width": "width",
    "height": "height",
    "fps": "fps",
    "video_codec": "videoCodec",
    "audio_codec": "audioCodec",
    "bitrate": "bitrate",
    "sample_rate": "sampleRate",
    "channels": "channels",
}


def av_metadata(info: dict[str, Any] | None) -> AudioVideoMetadata | None:
    """The metadata of a video or audio file from what the service stored of it."""
    if not info or info.get("kind") not in ("video", "audio"):
        return None
    values: dict[str, Any] = {field: info.get(key) for field, key in _AV_FIELDS.items()}
    values["container"] = values["container"] or ""
    values["rotation"] = int(info.get("rotation") or 0)
    return AudioVideoMetadata(kind=MediaKind(info["kind"]), **values)


def metadata_of(info: dict[str, Any] | None) -> ImageMetadata | AudioVideoMetadata | None:
    """The metadata of a stored file, by its kind; None when nothing is known."""
    if info and info.get("kind") == "image":
        return ImageMetadata(
            kind=MediaKind.IMAGE,
            format=str(info.get("format") or ""),
            frames=int(info.get("frames") or 1),
        )
    return av_metadata(info)
