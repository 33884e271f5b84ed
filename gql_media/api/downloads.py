"""Downloads of stored media at ``/media/<key>``: Range and conditional requests on both
storage backends, and long-lived caching (a URL's content never changes once published)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from gql_media.adapters.storage import content_type_of
from gql_media.errors import UserError
from gql_media.settings import Settings

CACHE_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


def _hidden(key: str) -> bool:
    """Files being received or made (``.scratch/``) are not downloads."""
    return any(part.startswith(".") for part in key.split("/"))


class PublicFiles(StaticFiles):
    """The service's own static files (GraphiQL's assets): public, whatever auth is set to,
    since the page that loads them opens without a key."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(CACHE_HEADERS)
        return response


class MediaFiles(PublicFiles):
    """Files of a local directory, with the cache headers of published media, downloaded
    with a signed URL when auth is required."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if _hidden(path):
            raise HTTPException(status_code=404)
        if not _signed(scope, path):
            return _forbidden()
        return await super().get_response(path, scope)


async def s3_download(request: Request) -> Response:
    """Stream an object from the bucket, passing Range and If-None-Match on to it."""
    key = request.path_params["key"]
    storage = request.state.runtime.deps.storage
    if _hidden(key):
        return Response(status_code=404)
    if not _signed(request.scope, key):
        return _forbidden()
    try:
        found = await storage.open(
            key, request.headers.get("range"), request.headers.get("if-none-match")
        )
    except UserError:
        found = None
    if found is None:
        return Response("Not Found", status_code=404, media_type="text/plain")
    if found.status in (304, 416):
        return Response(status_code=found.status, headers=CACHE_HEADERS)
    return StreamingResponse(
        iterate_in_threadpool(found.body),
        status_code=found.status,
        headers={**found.headers, **CACHE_HEADERS},
        media_type=content_type_of(key),
        background=BackgroundTask(found.close),
    )


def _signed(scope: Scope, key: str) -> bool:
    """With auth required, a download needs the URL's valid, unexpired signature."""
    auth = scope.get("state", {}).get("auth")
    if auth is None or not auth.required:
        return True
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    expires, signature = query.get("exp", [None])[0], query.get("sig", [None])[0]
    return bool(auth.media_allowed(key, expires, signature))


def _forbidden() -> Response:
    return Response(
        "this media URL is not signed, or its signature expired; ask the API for the job again",
        status_code=403,
        media_type="text/plain",
    )


def media_route(settings: Settings) -> BaseRoute:
    if settings.storage_backend == "s3":
        return Route("/media/{key:path}", s3_download, methods=["GET", "HEAD"])
    return Mount(
        "/media",
        MediaFiles(directory=settings.effective_storage_dir, check_dir=False),
        name="media",
    )


def static_files(directory: Path) -> PublicFiles:
    return PublicFiles(directory=directory)
