"""processImage and processVideo: checking their operations and running them on a worker.

A request's operations are read into the operations of ``services.operations``, every
problem reported with the path of the field at fault, and the job stores them as they
write themselves; the worker reads that JSON back the same way (rows stored before hold
the same shape).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gql_media.adapters import image_ops, video
from gql_media.adapters.providers import ProviderContext
from gql_media.domain import SYSTEM, JobKind, JobSnapshot, Principal
from gql_media.services.deps import Deps
from gql_media.services.media import (
    JobOptions,
    create_processing_job,
    source_file,
    upload_row,
    video_limits,
)
from gql_media.services.offload import offload
from gql_media.services.operations import (
    ExtractAudio,
    Reading,
    Transcode,
    Variant,
    VideoMetadata,
    VideoStep,
    VideoThumbnail,
    read_variants,
    read_video_steps,
    variants_json,
    video_steps_json,
)
from gql_media.settings import Settings


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


async def image_variants(deps: Deps, raw: Any, principal: Principal) -> list[Variant]:
    """The variants of a processImage request (or job); InvalidInput lists every problem,
    a watermark that is no image upload ``principal`` may use among them (NOT_FOUND)."""
    reading = Reading()
    variants = read_variants(deps.settings, raw, reading)
    known = await _image_uploads(deps, {media_id for _, media_id in reading.media}, principal)
    reading.missing_media(known, "watermark media not found")
    reading.raise_any()
    return variants


def video_steps(settings: Settings, raw: Any) -> list[VideoStep]:
    """The operations of a processVideo request (or job); InvalidInput lists every problem."""
    reading = Reading()
    steps = read_video_steps(settings, raw, reading)
    reading.raise_any()
    return steps


async def _image_uploads(deps: Deps, ids: set[str], principal: Principal) -> set[str]:
    """Those of ``ids`` that are image uploads ``principal`` may use."""
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
    options: JobOptions,
) -> JobSnapshot:
    principal.require_full("create jobs")
    checked = await image_variants(deps, variants, principal)
    return await create_processing_job(
        deps,
        JobKind.PROCESS_IMAGE,
        media_id,
        {"variants": variants_json(checked)},
        principal,
        options,
    )


async def create_process_video_job(
    deps: Deps,
    media_id: str,
    operations: Any,
    principal: Principal,
    options: JobOptions,
) -> JobSnapshot:
    principal.require_full("create jobs")
    steps = video_steps(deps.settings, operations)
    return await create_processing_job(
        deps,
        JobKind.PROCESS_VIDEO,
        media_id,
        {"operations": video_steps_json(steps)},
        principal,
        options,
    )


async def run_processing(
    deps: Deps, kind: JobKind, parameters: dict[str, Any], context: ProviderContext
) -> tuple[list[Produced], dict[str, Any] | None]:
    """Carry out a processing job: its outputs and, for videoMetadata, its result."""
    async with contextlib.AsyncExitStack() as files:
        source = await files.enter_async_context(
            source_file(deps, str(parameters.get("mediaId", "")), SYSTEM)
        )
        await context.progress(0.0)
        if kind is JobKind.PROCESS_VIDEO:
            steps = video_steps(deps.settings, parameters.get("operations"))
            return await _process_video(deps, source, steps, context)
        variants = await image_variants(deps, parameters.get("variants"), SYSTEM)
        marks = {
            media_id: await files.enter_async_context(source_file(deps, media_id, SYSTEM))
            for media_id in set().union(*(variant.media_ids() for variant in variants))
        }
        ready = [variant.to_adapter(marks.__getitem__) for variant in variants]
        return await _process_image(deps, source, ready, context), None


async def _process_image(
    deps: Deps, source: Path, variants: list[image_ops.Variant], context: ProviderContext
) -> list[Produced]:
    images = await offload(
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
    deps: Deps, source: Path, steps: list[VideoStep], context: ProviderContext
) -> tuple[list[Produced], dict[str, Any] | None]:
    produced: list[Produced] = []
    result: dict[str, Any] | None = None
    limits = video_limits(deps.settings)
    for index, step in enumerate(steps):
        op = step.operation
        if isinstance(op, VideoMetadata):
            info = await offload(deps, context, video.probe_media, source, limits, share=None)
            result = info.to_dict()
        elif isinstance(op, VideoThumbnail):
            data, content_type, width, height = await offload(
                deps,
                context,
                video.video_thumbnail,
                source,
                **op.options(),
                limits=limits,
                share=None,
            )
            produced.append(Produced(step.output, content_type, width, height, data=data))
        elif isinstance(op, Transcode | ExtractAudio):
            produced.append(await _to_file(deps, source, step, op, context, (index, len(steps))))
    return produced, result


async def _to_file(
    deps: Deps,
    source: Path,
    step: VideoStep,
    op: Transcode | ExtractAudio,
    context: ProviderContext,
    share: tuple[int, int],
) -> Produced:
    """A transcode or an audio track, written to a scratch file."""
    out = deps.storage.scratch_path()
    work: Callable[..., video.MediaInfo]
    work = video.transcode if isinstance(op, Transcode) else video.extract_audio
    try:
        info = await offload(
            deps,
            context,
            work,
            source,
            out,
            limits=video_limits(deps.settings),
            share=share,
            **op.options(),
        )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return Produced(
        step.output, info.content_type, info.width, info.height, path=out, info=info.to_dict()
    )
