"""``node`` and ``nodes``: jobs, media assets and webhook deliveries by id, for clients that
fetch again what they hold (Relay's Node). Ids are the same as ``job(id:)`` and
``media(id:)`` take."""

from __future__ import annotations

import strawberry

from gql_media.api.errors import graphql_error
from gql_media.api.subscriptions import IdArgument, Info
from gql_media.api.types import Node, asset_from_snapshot, delivery_from_row, job_from_snapshot
from gql_media.domain import AssetSnapshot, JobSnapshot
from gql_media.errors import UserError
from gql_media.services import nodes


def _node(info: Info, found: nodes.Found | None) -> Node | None:
    if found is None:
        return None
    if isinstance(found, JobSnapshot):
        return job_from_snapshot(found, info.context.media_url)
    if isinstance(found, AssetSnapshot):
        return asset_from_snapshot(found, info.context.media_url)
    return delivery_from_row(found)


async def node(info: Info, node_id: IdArgument) -> Node | None:
    return _node(info, await info.context.nodes.load(str(node_id)))


async def nodes_by_id(info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
    try:
        nodes.check_count(info.context.deps, len(ids))
    except UserError as exc:
        raise graphql_error(exc.code, exc.message) from exc
    found = await info.context.nodes.load_many([str(node_id) for node_id in ids])
    return [_node(info, each) for each in found]


NODE = strawberry.field(
    resolver=node,
    description="The job, media asset (an upload or a job's output) or webhook delivery of "
    "an id; null when the id is unknown, malformed or another owner's.",
)
NODES = strawberry.field(
    resolver=nodes_by_id,
    description="The job, media asset or webhook delivery of each id, in order, null where "
    "node(id:) is null; at most GQL_MEDIA_MAX_NODES ids (100 by default), else TOO_MANY_NODES.",
)
