"""Uploaded media and the jobs that process it.

An upload is received into a scratch file (its size capped while it streams), identified
by its content — never its name or declared type — and stored under ``uploads/<id>/``.
``processImage`` and ``processVideo`` jobs read an upload and write named outputs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from gql_media.adapters import image_ops, video
from gql_media.adapters.storage import storage_errors
from gql_media.db.models import AssetRow, utcnow
from gql_media.domain import (
    ASSET_ID_PREFIX,
    AssetSnapshot,
    JobKind,
    JobSnapshot,
    Principal,
    Scheduling,
    decode_id,
)
from gql_media.errors import ErrorCode, InvalidInput, MediaError, UserError
from gql_media.services.deps import Deps
from gql_media.services.job_validation import common_problems, scheduling_problems
from gql_media.services.new_jobs import JobDraft, in_utc, insert_job
from gql_media.services.snapshots import asset_snapshot
from gql_media.settings import Settings

log = logging.getLogger(__name__)

IMAGE_PROCESSOR = "image"
VIDEO_PROCESSOR = "video"
EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
    "image/tiff": "tiff",
    "image/bmp": "bmp",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "video/x-matroska": "mkv",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/flac": "flac",
    "application/json": "json",
}


def extension_for(content_type: str) -> str:
    return EXTENSIONS.get(content_type, "bin")


class UploadTooLarge(UserError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            ErrorCode.MEDIA_TOO_LARGE, f"the file is larger than {limit} bytes", "file"
        )


@dataclass(frozen=True, slots=True)
class Identified:
    kind: str  # "image", "video" or "audio"
    content_type: str
    width: int | None
    height: int | None
    info: dict[str, Any]


def video_limits(settings: Settings) -> video.Limits:
    return video.Limits(pixels=settings.max_video_pixels, seconds=settings.max_media_seconds)


def identify(path: Path, settings: Settings) -> Identified:
    """What the file is, by its content; raises MediaError for anything unsupported, over
    the media bounds of ``settings``, or damaged: an image is decoded whole, video and audio
    up to the upload decode budget."""
    try:
        image = image_ops.probe_image(
            path,
            max_pixels=settings.max_image_pixels,
            max_animation_pixels=settings.max_animation_pixels,
        )
    except MediaError as exc:
        if exc.code is not ErrorCode.UNSUPPORTED_MEDIA_TYPE:
            raise
    else:
        info = {"kind": "image", "format": image.format, "frames": image.frames}
        return Identified("image", image.content_type, image.width, image.height, info)
    limits = video_limits(settings)
    media = video.probe_media(path, limits)
    budget = video.Budget(settings.upload_decode_seconds, settings.upload_decode_pixels)
    video.check_media(path, limits, budget)
    return Identified(media.kind, media.content_type, media.width, media.height, media.to_dict())


async def receive(deps: Deps, chunks: AsyncIterable[bytes], principal: Principal) -> Path:
    """Stream ``chunks`` into a scratch file, stopping at the upload size limit; a disk that
    cannot take it raises StorageUnavailable. A watch token may not upload (FORBIDDEN),
    refused before a byte is read."""
    principal.require_full("upload media")
    limit = deps.settings.max_upload_bytes
    path = deps.storage.scratch_path()
    size = 0
    try:
        with storage_errors(), path.open("wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


async def store_upload(
    deps: Deps, staged: Path, filename: str | None, principal: Principal
) -> AssetSnapshot:
    """Identify the file ``staged`` (from ``receive``, which capped its size) and keep it as
    an upload; the scratch file is consumed either way."""
    if principal.scope is not None:
        staged.unlink(missing_ok=True)
        principal.require_full("upload media")
    try:
        try:
            found = await asyncio.to_thread(identify, staged, deps.settings)
        except MediaError as exc:
            raise UserError(exc.code, exc.message, "file") from exc
        digest, size = await asyncio.to_thread(digest_file, staged)
        asset_id = uuid.uuid4()
        key = f"uploads/{asset_id.hex}/original.{extension_for(found.content_type)}"
        await deps.storage.put_file(key, staged)
    finally:
        staged.unlink(missing_ok=True)
    row = AssetRow(
        id=asset_id,
        job_id=None,
        position=0,
        storage_key=key,
        content_type=found.content_type,
        width=found.width,
        height=found.height,
        byte_size=size,
        sha256=digest,
        created_at=utcnow(),
        role="upload",
        filename=_clean_filename(filename),
        info=found.info,
        owner_id=principal.key_id,
    )
    try:
        async with deps.sessions.begin() as session:
            session.add(row)
    except BaseException:
        await deps.storage.delete(key)
        raise
    log.info("stored upload %s (%s, %d bytes)", key, found.content_type, size)
    return asset_snapshot(row)


def digest_file(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


def _clean_filename(name: str | None) -> str | None:
    """Keep a display name only: no directories, no control characters, bounded length."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:255]
    return base or None


async def get_upload(deps: Deps, media_id: str, principal: Principal) -> AssetSnapshot | None:
    """An uploaded file, or None for an unknown or malformed id, or another owner's file."""
    row = await upload_row(deps, media_id, principal)
    return asset_snapshot(row) if row is not None else None


async def upload_row(deps: Deps, media_id: str, principal: Principal) -> AssetRow | None:
    parsed = decode_id(ASSET_ID_PREFIX, media_id)
    if parsed is None:
        return None
    async with deps.sessions() as session:
        row = await session.scalar(
            select(AssetRow).where(AssetRow.id == parsed, AssetRow.role == "upload")
        )
    return row if row is not None and principal.can_see(row.owner_id) else None


async def _source(
    deps: Deps, media_id: str, kinds: tuple[str, ...], principal: Principal
) -> AssetRow:
    row = await upload_row(deps, media_id, principal)
    if row is None:
        raise InvalidInput([UserError(ErrorCode.NOT_FOUND, "media not found", "mediaId")])
    kind = (row.info or {}).get("kind")
    if kind not in kinds:
        raise InvalidInput(
            [
                UserError(
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f"this operation needs {' or '.join(kinds)} media; the file is {kind}",
                    "mediaId",
                )
            ]
        )
    return row


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What every processing request may add to its operations."""

    idempotency_key: str | None = None
    webhook_url: str | None = None
    scheduling: Scheduling = field(default_factory=Scheduling)


def _request_hash(kind: JobKind, parameters: dict[str, Any]) -> str:
    data = {"kind": kind.value, **parameters}
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def create_processing_job(
    deps: Deps,
    kind: JobKind,
    media_id: str,
    parameters: dict[str, Any],
    principal: Principal,
    options: JobOptions,
) -> JobSnapshot:
    """Queue a processImage or processVideo job on an upload; ``parameters`` were validated
    by the caller and are stored as the job's parameters, with the media id."""
    principal.require_full("create jobs")
    kinds = ("image",) if kind is JobKind.PROCESS_IMAGE else ("video", "audio")
    await _source(deps, media_id, kinds, principal)
    problems = common_problems(deps.settings, options.idempotency_key, options.webhook_url)
    problems.extend(scheduling_problems(options.scheduling, principal, utcnow()))
    if problems:
        raise InvalidInput(problems)
    full = {"mediaId": media_id, **parameters}
    digest = {**full, **options.scheduling.digest_fields()}
    draft = JobDraft(
        kind=kind,
        provider=IMAGE_PROCESSOR if kind is JobKind.PROCESS_IMAGE else VIDEO_PROCESSOR,
        parameters=full,
        idempotency_key=options.idempotency_key,
        request_hash=_request_hash(kind, digest) if options.idempotency_key is not None else None,
        webhook_url=options.webhook_url,
        scheduling=in_utc(options.scheduling),
    )
    return await insert_job(deps, draft, principal)


@asynccontextmanager
async def source_file(deps: Deps, media_id: str, principal: Principal) -> AsyncIterator[Path]:
    """A local file with the content of an upload, for the duration of the block;
    MediaError NOT_FOUND if the upload or its file is gone (or ``principal`` may not see it)."""
    row = await upload_row(deps, media_id, principal)
    if row is None:
        raise MediaError(ErrorCode.NOT_FOUND, "the source media no longer exists")
    try:
        async with deps.storage.local_copy(row.storage_key) as path:
            yield path
    except FileNotFoundError as exc:
        raise MediaError(ErrorCode.NOT_FOUND, "the source media file is missing") from exc
