"""The per-request context resolvers receive as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from gql_media.adapters.events import EventHub
from gql_media.services.deps import Deps


@dataclass
class Context:
    deps: Deps
    hub: EventHub
    request: Request | WebSocket
    response: Response | WebSocket | None
    media_base_url: str

    def media_url(self, key: str) -> str:
        return f"{self.media_base_url}/media/{key}"


def media_base_url(public_url: str | None, request: Request | WebSocket) -> str:
    """Where clients fetch media: the configured public URL, else this request's own origin."""
    if public_url:
        return public_url.rstrip("/")
    url = request.url
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    return f"{scheme}://{url.netloc}"
