"""The per-request context resolvers receive as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader

from gql_media.adapters.events import EventHub
from gql_media.api.fanout import SharedJobs
from gql_media.api.positions import QueuePositions
from gql_media.db.models import WebhookDeliveryRow
from gql_media.domain import Principal
from gql_media.errors import Unauthenticated
from gql_media.services import nodes, queue_info, webhooks
from gql_media.services.auth import Authenticator
from gql_media.services.deps import Deps
from gql_media.services.nodes import Found
from gql_media.services.queue_info import Estimate


@dataclass
class Context:
    deps: Deps
    hub: EventHub
    positions: QueuePositions
    request: Request | WebSocket
    response: Response | WebSocket | None
    public_url: str | None  # GQL_MEDIA_PUBLIC_URL
    auth: Authenticator
    shared_jobs: SharedJobs
    # who auth chose: set by the HTTP view before a request runs, and by on_ws_connect for
    # a socket; None until then, and then no resolver runs
    caller: Principal | None = None
    connection_params: dict[str, Any] | None = None  # a WebSocket's connection_init payload
    stream: bool = False  # an HTTP request answered as a stream (``api.streams``)

    # The loaders below are made when a resolver first asks (most requests use none).

    @cached_property
    def estimates(self) -> DataLoader[str, Estimate | None]:
        """Queue estimates of the jobs a request or event resolves, in one round trip per
        tick (not cached: a socket's context lives as long as the socket)."""
        deps = self.deps

        async def load(job_ids: list[str]) -> list[Estimate | None]:
            return await queue_info.estimates(deps, job_ids)

        return DataLoader(load, cache=False)

    @cached_property
    def nodes(self) -> DataLoader[str, Found | None]:
        """Jobs and media assets by id (node, nodes), the ids of a tick in one lookup, as
        the request's principal may see them."""
        deps = self.deps

        async def load(ids: list[str]) -> list[Found | None]:
            return await nodes.get_nodes(deps, ids, self.principal)

        return DataLoader(load, cache=False)

    @cached_property
    def deliveries(self) -> DataLoader[str, list[WebhookDeliveryRow]]:
        """Each job's webhook deliveries, the jobs of a tick in one query, as the request's
        principal may see them."""
        deps = self.deps

        async def load(job_ids: list[str]) -> list[list[WebhookDeliveryRow]]:
            return await webhooks.deliveries_of(deps, job_ids, self.principal)

        return DataLoader(load, cache=False)

    @property
    def principal(self) -> Principal:
        """The principal auth chose for this request or socket; without one, nothing runs."""
        if self.caller is None:
            raise Unauthenticated()
        return self.caller

    @cached_property
    def media_base_url(self) -> str:
        """Where clients fetch media; worked out from the request only when a URL is made
        (most requests make none)."""
        return media_base_url(self.public_url, self.request)

    def media_url(self, key: str) -> str:
        return media_url(self.media_base_url, key, self.auth)


def media_url(base: str, key: str, auth: Authenticator) -> str:
    """Where a stored file is downloaded; signed and expiring when auth is required."""
    url = f"{base}/media/{key}"
    return f"{url}?{auth.sign_media(key)}" if auth.required else url


def media_base_url(public_url: str | None, request: Request | WebSocket) -> str:
    """Where clients fetch media: the configured public URL, else this request's own origin."""
    if public_url:
        return public_url.rstrip("/")
    url = request.url
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    return f"{scheme}://{url.netloc}"
