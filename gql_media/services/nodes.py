"""Objects by id, whatever their type: the jobs, media assets and webhook deliveries behind
``node`` and ``nodes``.

An id's prefix says its type (``job_``, ``med_``, ``whd_``); the lookup is owner-checked
exactly like ``jobs.get_job``: an unknown, malformed or another owner's id is None, so it
never tells that the object exists. A batch of ids costs one query per type, not one per id.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gql_media.db.models import AssetRow, JobRow, WebhookDeliveryRow
from gql_media.domain import (
    ASSET_ID_PREFIX,
    JOB_ID_PREFIX,
    WEBHOOK_DELIVERY_ID_PREFIX,
    AssetSnapshot,
    JobSnapshot,
    Principal,
    decode_id,
)
from gql_media.errors import ErrorCode, UserError
from gql_media.services.deps import Deps
from gql_media.services.snapshots import asset_snapshot, job_snapshot

Found = JobSnapshot | AssetSnapshot | WebhookDeliveryRow
PREFIXES = (JOB_ID_PREFIX, ASSET_ID_PREFIX, WEBHOOK_DELIVERY_ID_PREFIX)


def check_count(deps: Deps, count: int) -> None:
    """TOO_MANY_NODES when one request asks for more than ``max_nodes`` ids."""
    limit = deps.settings.max_nodes
    if count > limit:
        raise UserError(
            ErrorCode.TOO_MANY_NODES, f"ask for at most {limit} ids at once, not {count}", "ids"
        )


def _parsed(ids: Sequence[str], prefix: str) -> set[uuid.UUID]:
    return {parsed for text in ids if (parsed := decode_id(prefix, text)) is not None}


def _key(text: str) -> tuple[str, uuid.UUID] | None:
    for prefix in PREFIXES:
        if (parsed := decode_id(prefix, text)) is not None:
            return prefix, parsed
    return None


async def get_nodes(deps: Deps, ids: Sequence[str], principal: Principal) -> list[Found | None]:
    """The job, media asset (an upload, or an output of a job) or webhook delivery of each
    id, in order; None for an id that is unknown, malformed or another owner's."""
    found: dict[tuple[str, uuid.UUID], Found] = {}
    async with deps.sessions() as session:
        if job_ids := _parsed(ids, JOB_ID_PREFIX):
            stmt = select(JobRow).where(JobRow.id.in_(job_ids))
            for row in (await session.scalars(stmt.options(selectinload(JobRow.outputs)))).all():
                if principal.can_see(row.owner_id):
                    found[JOB_ID_PREFIX, row.id] = job_snapshot(row, row.outputs)
        if asset_ids := _parsed(ids, ASSET_ID_PREFIX):
            # an upload belongs to who sent it, an output to its job's owner
            assets = (
                select(AssetRow, JobRow.owner_id)
                .outerjoin(JobRow, AssetRow.job_id == JobRow.id)
                .where(AssetRow.id.in_(asset_ids))
            )
            for asset, job_owner in (await session.execute(assets)).all():
                owner = asset.owner_id if asset.job_id is None else job_owner
                if principal.can_see(owner):
                    found[ASSET_ID_PREFIX, asset.id] = asset_snapshot(asset)
        if delivery_ids := _parsed(ids, WEBHOOK_DELIVERY_ID_PREFIX):
            # a delivery belongs to its job's owner
            deliveries = (
                select(WebhookDeliveryRow, JobRow.owner_id)
                .join(JobRow, WebhookDeliveryRow.job_id == JobRow.id)
                .where(WebhookDeliveryRow.id.in_(delivery_ids))
            )
            for delivery, owner in (await session.execute(deliveries)).all():
                if principal.can_see(owner):
                    found[WEBHOOK_DELIVERY_ID_PREFIX, delivery.id] = delivery
    return [found.get(key) if (key := _key(text)) else None for text in ids]
