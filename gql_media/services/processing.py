"""processImage and processVideo: validating their operations and running them on a worker.

Operations arrive as JSON (camelCase, as the api received them) and are stored on the job
as they are; ``image_variants`` and ``video_operations`` turn them into the adapters'
types, reporting every problem with the path of the field at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

from gql_media.adapters import image_ops, video
from gql_media.adapters.providers import ProviderContext
from gql_media.domain import ANONYMOUS, JobKind, JobSnapshot, Principal
from gql_media.errors import ErrorCode, InvalidInput, JobCanceled, UserError
from gql_media.services.deps import Deps
from gql_media.services.media import (
    create_processing_job,
    source_file,
    upload_row,
    video_limits,
)
from gql_media.settings import Settings

T = TypeVar("T")
# how often running media work looks whether its job was canceled: the work ends that soon
CANCEL_CHECK_SECONDS = 1.0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
POSITIONS: tuple[str, ...] = get_args(image_ops.Position)
IMAGE_FORMATS = image_ops.OUTPUT_FORMATS
FITS: tuple[str, ...] = get_args(image_ops.Fit)
QUALITIES = ("low", "medium", "high")
AUDIO_CODECS = ("aac", "mp3", "opus")


@dataclass(frozen=True, slots=True)
class Produced:
    """One output of a processing job: bytes or a finished file, and what it is."""

    name: str | None
    content_type: str
    width: int | None
    height: int | None
    data: bytes | None = None
    path: Path | None = None
    info: dict[str, Any] | None = None


class _Problems:
    """Collects userErrors so one request reports all of them."""

    def __init__(self) -> None:
        self.errors: list[UserError] = []

    def add(self, field: str, message: str, code: ErrorCode = ErrorCode.INVALID_ARGUMENT) -> None:
        self.errors.append(UserError(code, message, field))

    def number(
        self, data: dict[str, Any], key: str, field: str, low: float, high: float, default: Any
    ) -> Any:
        value = data.get(key, default)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            self.add(f"{field}.{key}", f"{key} must be a number from {low:g} to {high:g}")
            return default
        return value

    def choice(
        self, data: dict[str, Any], key: str, field: str, options: tuple[str, ...], default: Any
    ) -> Any:
        value = data.get(key, default)
        if value is None:
            return default
        if value not in options:
            self.add(f"{field}.{key}", f"{key} must be one of {', '.join(options)}")
            return default
        return value

    def raise_any(self) -> None:
        if self.errors:
            raise InvalidInput(self.errors)


def _one_of(op: Any, field: str, problems: _Problems) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(op, dict):
        problems.add(field, "an operation must be an object")
        return None
    given = [(k, v) for k, v in op.items() if v is not None and k != "name"]
    if len(given) != 1:
        problems.add(field, "give exactly one operation per entry")
        return None
    key, value = given[0]
    return key, value if isinstance(value, dict) else {}


def image_variants(
    settings: Settings,
    variants: Any,
    watermark_path: Callable[[str], Path | None] | None = None,
) -> list[image_ops.Variant]:
    """The variants of a processImage request; InvalidInput lists every problem.

    ``watermark_path`` resolves an imageWatermark's mediaId (None: unknown); without it
    (at request time, before the media is looked up) a placeholder path is used.
    """
    problems = _Problems()
    result: list[image_ops.Variant] = []
    if not isinstance(variants, list) or not 1 <= len(variants) <= settings.max_variants:
        problems.add("variants", f"give 1 to {settings.max_variants} variants")
        problems.raise_any()
    names: set[str] = set()
    for i, variant in enumerate(variants):
        field = f"variants.{i}"
        if not isinstance(variant, dict):
            problems.add(field, "a variant must be an object")
            continue
        name = variant.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            problems.add(f"{field}.name", "name: 1-64 letters, digits, '-' or '_'")
            name = f"variant-{i}"
        elif name in names:
            problems.add(f"{field}.name", f"variant name {name!r} is used twice")
        names.add(name)
        ops = variant.get("operations") or []
        if not isinstance(ops, list) or len(ops) > settings.max_operations:
            problems.add(f"{field}.operations", f"at most {settings.max_operations} operations")
            ops = []
        operations = [
            op
            for j, raw in enumerate(ops)
            if (op := _image_op(raw, f"{field}.operations.{j}", problems, watermark_path))
            is not None
        ]
        output = image_ops.Output(
            format=problems.choice(variant, "format", field, IMAGE_FORMATS, None),
            quality=problems.number(variant, "quality", field, 1, 100, None),
            progressive=bool(variant.get("progressive", False)),
            strip_metadata=bool(variant.get("stripMetadata", True)),
        )
        result.append(image_ops.Variant(name=name, operations=tuple(operations), output=output))
    problems.raise_any()
    return result


def _image_op(
    raw: Any,
    field: str,
    problems: _Problems,
    watermark_path: Callable[[str], Path | None] | None,
) -> image_ops.Operation | None:
    found = _one_of(raw, field, problems)
    if found is None:
        return None
    kind, data = found
    field = f"{field}.{kind}"
    limit = 100_000
    if kind == "resize":
        width = problems.number(data, "width", field, 1, limit, None)
        height = problems.number(data, "height", field, 1, limit, None)
        if width is None and height is None:
            problems.add(field, "resize needs a width, a height or both")
        fit = problems.choice(data, "fit", field, FITS, "contain")
        return image_ops.Resize(
            width=width, height=height, fit=fit, upscale=bool(data.get("upscale", False))
        )
    if kind == "thumbnail":
        return image_ops.Thumbnail(size=int(problems.number(data, "size", field, 1, limit, 256)))
    if kind == "crop":
        left, top = (int(problems.number(data, k, field, 0, limit, 0)) for k in ("left", "top"))
        width, height = (
            int(problems.number(data, k, field, 1, limit, 1)) for k in ("width", "height")
        )
        return image_ops.Crop(left=left, top=top, width=width, height=height)
    if kind == "rotate":
        return image_ops.Rotate(
            degrees=float(problems.number(data, "degrees", field, -360, 360, 0)),
            expand=bool(data.get("expand", True)),
            background=str(data.get("background") or "#00000000"),
        )
    if kind == "autoOrient":
        return image_ops.AutoOrient()
    position = problems.choice(data, "position", field, POSITIONS, "bottom-right")
    margin = int(problems.number(data, "margin", field, 0, 10_000, 16))
    opacity = float(problems.number(data, "opacity", field, 0, 1, 0.5))
    if kind == "textWatermark":
        text = data.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > 200:
            problems.add(f"{field}.text", "text must be 1 to 200 characters")
            text = "?"
        return image_ops.TextWatermark(
            text=text,
            position=position,
            margin=margin,
            opacity=opacity,
            scale=float(problems.number(data, "scale", field, 0.005, 1, 0.05)),
            color=str(data.get("color") or "#ffffff"),
        )
    if kind == "imageWatermark":
        media_id = str(data.get("mediaId") or "")
        path = watermark_path(media_id) if watermark_path else Path(media_id)
        if path is None:
            problems.add(f"{field}.mediaId", "watermark media not found", ErrorCode.NOT_FOUND)
            path = Path()
        return image_ops.ImageWatermark(
            source=path,
            position=position,
            margin=margin,
            opacity=opacity,
            scale=float(problems.number(data, "scale", field, 0.01, 1, 0.2)),
        )
    problems.add(field, f"unknown operation {kind!r}")
    return None


@dataclass(frozen=True, slots=True)
class VideoOperation:
    kind: Literal["videoThumbnail", "videoMetadata", "transcode", "extractAudio"]
    name: str
    options: dict[str, Any]


def video_operations(settings: Settings, operations: Any) -> list[VideoOperation]:
    """The operations of a processVideo request; InvalidInput lists every problem."""
    problems = _Problems()
    if not isinstance(operations, list) or not 1 <= len(operations) <= settings.max_operations:
        problems.add("operations", f"give 1 to {settings.max_operations} operations")
        problems.raise_any()
    result: list[VideoOperation] = []
    names: set[str] = set()
    for i, raw in enumerate(operations):
        field = f"operations.{i}"
        found = _one_of(raw, field, problems)
        if found is None:
            continue
        kind, data = found
        sub = f"{field}.{kind}"
        options: dict[str, Any]
        if kind == "videoThumbnail":
            options = {
                "at": problems.number(data, "at", sub, 0, 86_400, None),
                "fraction": problems.number(data, "fraction", sub, 0, 1, None),
                "max_size": problems.number(data, "maxSize", sub, 16, 8192, None),
                "format": problems.choice(data, "format", sub, ("JPEG", "PNG", "WEBP"), "JPEG"),
            }
            if options["at"] is not None and options["fraction"] is not None:
                problems.add(sub, "give at or fraction, not both")
        elif kind == "videoMetadata":
            options = {}
        elif kind == "transcode":
            options = {
                "target_height": problems.number(data, "targetHeight", sub, 16, 4320, None),
                "quality": problems.choice(data, "quality", sub, QUALITIES, "medium"),
            }
        elif kind == "extractAudio":
            options = {
                "codec": problems.choice(data, "codec", sub, AUDIO_CODECS, "aac"),
                "bitrate": problems.number(data, "bitrate", sub, 8_000, 512_000, None),
            }
        else:
            problems.add(sub, f"unknown operation {kind!r}")
            continue
        default = {"videoThumbnail": "thumbnail", "transcode": "video", "extractAudio": "audio"}
        name = raw.get("name") or default.get(kind, "metadata")
        if not isinstance(name, str) or not NAME.match(name):
            problems.add(f"{field}.name", "name: 1-64 letters, digits, '-' or '_'")
        elif name in names:
            problems.add(f"{field}.name", f"output name {name!r} is used twice")
        names.add(name)
        result.append(VideoOperation(cast(Any, kind), name, options))
    problems.raise_any()
    return result


async def _offload(
    deps: Deps,
    context: ProviderContext,
    function: Callable[..., T],
    *args: Any,
    share: tuple[int, int] | None = (0, 1),
    **kwargs: Any,
) -> T:
    """``function(*args, **kwargs)`` away from the event loop: in a child process of
    ``deps.processes``, killed as soon as the job times out or is canceled, or in a thread
    with isolation off (the work then stops at its next progress report).

    With a ``share`` (index, count) the function gets a ``progress`` keyword; its reports,
    scaled into that share of the job, reach the job at most every progress interval.
    """
    state: dict[str, Any] = {"fraction": 0.0, "stop": False}

    def report(fraction: float) -> None:
        if state["stop"]:
            raise JobCanceled("the job was canceled")
        index, count = share or (0, 1)
        state["fraction"] = (index + fraction) / count

    progress = report if share is not None else None
    if deps.processes is not None:
        work = deps.processes.run(function, *args, progress=progress, **kwargs)
    else:
        reporting = {"progress": progress} if progress is not None else {}
        work = asyncio.to_thread(function, *args, **kwargs, **reporting)
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    checked = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=max(deps.settings.progress_interval, 0.05))
            if done:
                return task.result()
            await context.progress(state["fraction"])
            if time.monotonic() - checked >= CANCEL_CHECK_SECONDS:
                # progress writes (which notice a cancel) stop while the fraction stands
                # still, and the lease renewal comes only every third of the lease
                checked = time.monotonic()
                await context.ensure_running()
    except BaseException:
        state["stop"] = True
        task.cancel()
        await asyncio.wait({task})  # a child process is gone before the job moves on
        raise


async def run_processing(
    deps: Deps, kind: JobKind, parameters: dict[str, Any], context: ProviderContext
) -> tuple[list[Produced], dict[str, Any] | None]:
    """Carry out a processing job: its outputs and, for videoMetadata, its result."""
    async with contextlib.AsyncExitStack() as files:
        source = await files.enter_async_context(
            source_file(deps, str(parameters.get("mediaId", "")))
        )
        await context.progress(0.0)
        if kind is JobKind.PROCESS_IMAGE:
            raw = parameters.get("variants")
            marks = {
                media_id: await files.enter_async_context(source_file(deps, media_id))
                for media_id in await _watermark_ids(deps, raw)
            }
            return await _process_image(
                deps, source, image_variants(deps.settings, raw, marks.get), context
            ), None
        return await _process_video(deps, source, parameters, context)


async def _process_image(
    deps: Deps, source: Path, variants: list[image_ops.Variant], context: ProviderContext
) -> list[Produced]:
    images = await _offload(
        deps,
        context,
        image_ops.process_image,
        source,
        variants,
        max_pixels=deps.settings.max_image_pixels,
        max_animation_pixels=deps.settings.max_animation_pixels,
    )
    return [Produced(i.name, i.content_type, i.width, i.height, data=i.data) for i in images]


async def _process_video(
    deps: Deps, source: Path, parameters: dict[str, Any], context: ProviderContext
) -> tuple[list[Produced], dict[str, Any] | None]:
    operations = video_operations(deps.settings, parameters.get("operations"))
    produced: list[Produced] = []
    result: dict[str, Any] | None = None
    for index, op in enumerate(operations):
        share = (index, len(operations))
        if op.kind == "videoMetadata":
            info = await _offload(
                deps, context, video.probe_media, source, video_limits(deps.settings), share=None
            )
            result = info.to_dict()
            continue
        produced.append(await _video_op(deps, source, op, context, share))
    return produced, result


async def _watermark_ids(deps: Deps, variants: Any, principal: Principal = ANONYMOUS) -> set[str]:
    """Ids of the image uploads that imageWatermark operations name."""
    ids: set[str] = set()
    for variant in variants if isinstance(variants, list) else []:
        for op in (variant.get("operations") or []) if isinstance(variant, dict) else []:
            mark = op.get("imageWatermark") if isinstance(op, dict) else None
            if isinstance(mark, dict) and isinstance(mark.get("mediaId"), str):
                ids.add(mark["mediaId"])
    found: set[str] = set()
    for media_id in ids:
        row = await upload_row(deps, media_id, principal)
        if row is not None and (row.info or {}).get("kind") == "image":
            found.add(media_id)
    return found


async def create_process_image_job(
    deps: Deps,
    media_id: str,
    variants: Any,
    idempotency_key: str | None = None,
    principal: Principal = ANONYMOUS,
    webhook_url: str | None = None,
) -> JobSnapshot:
    known = await _watermark_ids(deps, variants, principal)
    image_variants(deps.settings, variants, lambda media_id: Path() if media_id in known else None)
    return await create_processing_job(
        deps,
        JobKind.PROCESS_IMAGE,
        media_id,
        {"variants": variants},
        idempotency_key,
        principal,
        webhook_url,
    )


async def create_process_video_job(
    deps: Deps,
    media_id: str,
    operations: Any,
    idempotency_key: str | None = None,
    principal: Principal = ANONYMOUS,
    webhook_url: str | None = None,
) -> JobSnapshot:
    video_operations(deps.settings, operations)
    return await create_processing_job(
        deps,
        JobKind.PROCESS_VIDEO,
        media_id,
        {"operations": operations},
        idempotency_key,
        principal,
        webhook_url,
    )


async def _video_op(
    deps: Deps,
    source: Path,
    op: VideoOperation,
    context: ProviderContext,
    share: tuple[int, int],
) -> Produced:
    limits = video_limits(deps.settings)
    if op.kind == "videoThumbnail":
        o = op.options
        data, content_type, width, height = await _offload(
            deps,
            context,
            video.video_thumbnail,
            source,
            at=o["at"],
            fraction=o["fraction"],
            max_size=o["max_size"],
            format=o["format"],
            limits=limits,
            share=None,
        )
        return Produced(op.name, content_type, width, height, data=data)
    out = deps.storage.scratch_path()
    try:
        if op.kind == "transcode":
            info = await _offload(
                deps,
                context,
                video.transcode,
                source,
                out,
                target_height=op.options["target_height"],
                quality=op.options["quality"],
                limits=limits,
                share=share,
            )
        else:
            info = await _offload(
                deps,
                context,
                video.extract_audio,
                source,
                out,
                codec=op.options["codec"],
                bitrate=op.options["bitrate"],
                limits=limits,
                share=share,
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return Produced(
        op.name, info.content_type, info.width, info.height, path=out, info=info.to_dict()
    )
