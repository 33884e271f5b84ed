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
from typing import Any, Literal, TypeVar, cast

from gql_media.adapters import image_ops, video
from gql_media.adapters.providers import ProviderContext
from gql_media.domain import SYSTEM, JobKind, JobSnapshot, Principal
from gql_media.errors import ErrorCode, InvalidInput, JobCanceled, UserError
from gql_media.services import operation_fields as spec
from gql_media.services.deps import Deps
from gql_media.services.input_limits import text_problem
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
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # whole names only: fullmatch


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

    def number(self, data: dict[str, Any], field: str, param: spec.Param) -> Any:
        """``param``'s number in ``data``: its default when omitted, and a problem (with the
        range the schema states) when out of range."""
        value = data.get(param.name)
        if value is None:
            if param.required:
                self.add(f"{field}.{param.name}", f"{param.name} is required")
                return param.low
            return param.default
        assert param.low is not None and param.high is not None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not param.low <= value <= param.high
        ):
            self.add(f"{field}.{param.name}", param.out_of_range)
            return param.default if param.default is not None else param.low
        return value

    def choice(self, data: dict[str, Any], field: str, param: spec.Param) -> Any:
        value = data.get(param.name)
        if value is None:
            return param.default
        if value not in param.values:
            self.add(
                f"{field}.{param.name}", f"{param.name} must be one of {', '.join(param.values)}"
            )
            return param.default
        return value

    def text(self, data: dict[str, Any], field: str, param: spec.Param) -> str:
        """A free-form string option: bounded, and storable (see ``input_limits``)."""
        value = data.get(param.name)
        default = str(param.default or "")
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            self.add(f"{field}.{param.name}", f"{param.name} must be a string")
            return default
        problem = text_problem(f"{field}.{param.name}", value, param.max_chars)
        if problem is not None:
            self.errors.append(problem)
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


def _flag(data: dict[str, Any], param: spec.Param) -> bool:
    value = data.get(param.name)
    return bool(param.default if value is None else value)


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
        if not isinstance(name, str) or not NAME.fullmatch(name):
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
            format=problems.choice(variant, field, spec.VARIANT["format"]),
            quality=problems.number(variant, field, spec.VARIANT["quality"]),
            progressive=_flag(variant, spec.VARIANT["progressive"]),
            strip_metadata=_flag(variant, spec.VARIANT["stripMetadata"]),
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
    if kind == "resize":
        width = problems.number(data, field, spec.RESIZE["width"])
        height = problems.number(data, field, spec.RESIZE["height"])
        if width is None and height is None:
            problems.add(field, "resize needs a width, a height or both")
        return image_ops.Resize(
            width=width,
            height=height,
            fit=problems.choice(data, field, spec.RESIZE["fit"]),
            upscale=_flag(data, spec.RESIZE["upscale"]),
        )
    if kind == "thumbnail":
        return image_ops.Thumbnail(size=int(problems.number(data, field, spec.THUMBNAIL["size"])))
    if kind == "crop":
        left, top, width, height = (
            int(problems.number(data, field, param)) for param in spec.CROP.params
        )
        return image_ops.Crop(left=left, top=top, width=width, height=height)
    if kind == "rotate":
        return image_ops.Rotate(
            degrees=float(problems.number(data, field, spec.ROTATE["degrees"])),
            expand=_flag(data, spec.ROTATE["expand"]),
            background=problems.text(data, field, spec.ROTATE["background"]),
        )
    if kind == "autoOrient":
        return image_ops.AutoOrient()
    position = problems.choice(data, field, spec.POSITION)
    margin = int(problems.number(data, field, spec.MARGIN))
    opacity = float(problems.number(data, field, spec.OPACITY))
    if kind == "textWatermark":
        text_param = spec.TEXT_WATERMARK["text"]
        text = data.get("text")
        if isinstance(text, str) and text.strip():
            text = problems.text(data, field, text_param)
        else:
            problems.add(f"{field}.text", f"text must be 1 to {text_param.max_chars} characters")
            text = "?"
        return image_ops.TextWatermark(
            text=text,
            position=position,
            margin=margin,
            opacity=opacity,
            scale=float(problems.number(data, field, spec.TEXT_WATERMARK["scale"])),
            color=problems.text(data, field, spec.TEXT_WATERMARK["color"]),
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
            scale=float(problems.number(data, field, spec.IMAGE_WATERMARK["scale"])),
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
            frame = spec.VIDEO_THUMBNAIL
            options = {
                "at": problems.number(data, sub, frame["at"]),
                "fraction": problems.number(data, sub, frame["fraction"]),
                "max_size": problems.number(data, sub, frame["maxSize"]),
                "format": problems.choice(data, sub, frame["format"]),
            }
            if options["at"] is not None and options["fraction"] is not None:
                problems.add(sub, "give at or fraction, not both")
            elif options["at"] is None and options["fraction"] is None:
                options["fraction"] = spec.DEFAULT_FRACTION
        elif kind == "videoMetadata":
            options = {}
        elif kind == "transcode":
            options = {
                "target_height": problems.number(data, sub, spec.TRANSCODE["targetHeight"]),
                "quality": problems.choice(data, sub, spec.TRANSCODE["quality"]),
            }
        elif kind == "extractAudio":
            codec = problems.choice(data, sub, spec.EXTRACT_AUDIO["codec"])
            bitrate = problems.number(data, sub, spec.EXTRACT_AUDIO["bitrate"])
            options = {"codec": codec, "bitrate": bitrate or spec.AUDIO_BITRATES[codec]}
        else:
            problems.add(sub, f"unknown operation {kind!r}")
            continue
        name = _output_name(raw.get("name"), kind, f"{field}.name", names, problems)
        result.append(VideoOperation(cast(Any, kind), name, options))
    problems.raise_any()
    return result


def _output_name(given: Any, kind: str, field: str, names: set[str], problems: _Problems) -> str:
    """The name of a video operation's output (its default when not ``given``); an
    operation that makes no output has none, so any name it is given is no output's."""
    output = next(op.output for op in spec.VIDEO_OPERATIONS if op.name == kind)
    if output is None:
        return ""
    name = given or output
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.add(field, "name: 1-64 letters, digits, '-' or '_'")
    elif name in names:
        problems.add(field, f"output name {name!r} is used twice")
    names.add(name)
    return str(name)


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
            source_file(deps, str(parameters.get("mediaId", "")), SYSTEM)
        )
        await context.progress(0.0)
        if kind is JobKind.PROCESS_IMAGE:
            raw = parameters.get("variants")
            marks = {
                media_id: await files.enter_async_context(source_file(deps, media_id, SYSTEM))
                for media_id in await _watermark_ids(deps, raw, SYSTEM)
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


async def _watermark_ids(deps: Deps, variants: Any, principal: Principal) -> set[str]:
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
    principal: Principal,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
) -> JobSnapshot:
    known = await _watermark_ids(deps, variants, principal)
    image_variants(deps.settings, variants, lambda media_id: Path() if media_id in known else None)
    return await create_processing_job(
        deps,
        JobKind.PROCESS_IMAGE,
        media_id,
        {"variants": variants},
        principal,
        idempotency_key,
        webhook_url,
    )


async def create_process_video_job(
    deps: Deps,
    media_id: str,
    operations: Any,
    principal: Principal,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
) -> JobSnapshot:
    video_operations(deps.settings, operations)
    return await create_processing_job(
        deps,
        JobKind.PROCESS_VIDEO,
        media_id,
        {"operations": operations},
        principal,
        idempotency_key,
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
            work: Callable[..., Any] = video.transcode
            options = {key: op.options[key] for key in ("target_height", "quality")}
        else:
            work = video.extract_audio
            options = {key: op.options[key] for key in ("codec", "bitrate")}
        info = await _offload(
            deps, context, work, source, out, limits=limits, share=share, **options
        )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return Produced(
        op.name, info.content_type, info.width, info.height, path=out, info=info.to_dict()
    )
