"""POST /uploads: a file as the raw request body, streamed to storage."""

from __future__ import annotations

import logging
import math
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gql_media.api.context import media_base_url, media_url
from gql_media.api.errors import error_response, unauthenticated
from gql_media.api.security import origin_allowed
from gql_media.api.types import MediaAsset, asset_from_snapshot
from gql_media.domain import decimal
from gql_media.errors import CredentialRefused, ErrorCode, StorageUnavailable
from gql_media.errors import UserError as DomainUserError
from gql_media.services import limits
from gql_media.services import media as media_service
from gql_media.services.auth import Authenticator, bearer

log = logging.getLogger(__name__)

# the HTTP status of a refused upload, by code (422 for the rest)
STATUSES = {ErrorCode.MEDIA_TOO_LARGE: 413, ErrorCode.FORBIDDEN: 403}

# what a browser's form may send cross-site without a preflight: an upload must not be one
SIMPLE_CONTENT_TYPES = (
    "",
    "text/plain",
    "multipart/form-data",
    "application/x-www-form-urlencoded",
)


async def upload(request: Request) -> Response:
    """POST /uploads: the raw file as the body, streamed to storage with the size capped;
    ``?filename=`` names it. Answers like uploadMedia: ``{"media": …, "userErrors": […]}``."""
    deps = request.state.runtime.deps
    if not origin_allowed(request.scope, deps.settings):
        return error_response(ErrorCode.FORBIDDEN_ORIGIN, "this origin is not allowed", 403)
    auth: Authenticator = request.state.auth
    try:
        principal = await auth.principal(bearer(request.headers.get("authorization")))
    except CredentialRefused as exc:
        return error_response(exc.code, exc.message, 401)
    if principal is None:
        return unauthenticated()
    try:
        await limits.admit(deps, principal)
    except DomainUserError as exc:
        limited = _user_error(exc.code, exc.message, 429, None)
        limited.headers["Retry-After"] = str(math.ceil(exc.retry_after or 1))
        return limited
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in SIMPLE_CONTENT_TYPES:
        return _user_error(
            ErrorCode.PREFLIGHT_REQUIRED,
            "send the file with its own content type, e.g. application/octet-stream",
            415,
        )
    declared = decimal(request.headers.get("content-length"))
    if declared is not None and declared > deps.settings.max_upload_bytes:
        return _user_error(
            ErrorCode.MEDIA_TOO_LARGE,
            f"the file is larger than {deps.settings.max_upload_bytes} bytes",
            413,
        )
    try:
        staged = await media_service.receive(deps, request.stream(), principal)
        asset = await media_service.store_upload(
            deps, staged, request.query_params.get("filename"), principal
        )
    except DomainUserError as exc:
        status = STATUSES.get(exc.code, 422)
        return _user_error(exc.code, exc.message, status, exc.field)
    except StorageUnavailable as exc:
        log.warning("upload refused: %s", exc.message)
        return error_response(exc.code, exc.message, 503)
    except ClientDisconnect:
        return Response(status_code=400)
    base = media_base_url(deps.settings.public_url, request)
    media = asset_from_snapshot(asset, lambda key: media_url(base, key, auth))
    return JSONResponse({"media": asset_json(media), "userErrors": []}, status_code=201)


def _user_error(code: ErrorCode, message: str, status: int, field: str | None = "file") -> Response:
    return JSONResponse(
        {"media": None, "userErrors": [{"field": field, "code": code.value, "message": message}]},
        status_code=status,
    )


def asset_json(media: MediaAsset) -> dict[str, Any]:
    return {
        "id": media.id,
        "url": media.url,
        "contentType": media.content_type,
        "width": media.width,
        "height": media.height,
        "byteSize": media.byte_size,
        "sha256": media.sha256,
        "name": media.name,
        "filename": media.filename,
        "metadata": media.info,  # as stored: the field names of the GraphQL types
        "createdAt": media.created_at.isoformat() if media.created_at else None,
    }


def upload_route() -> Route:
    return Route("/uploads", upload, methods=["POST"])
