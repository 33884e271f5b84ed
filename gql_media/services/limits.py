"""Per-key limits on mutations: a request rate (a token bucket in Redis, shared by every api
process) and a cap on a key's unfinished jobs. Anonymous use (auth off) is not limited."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy import func, select

from gql_media.db.models import JobRow
from gql_media.domain import JobStatus, Principal
from gql_media.errors import ErrorCode, UserError
from gql_media.services.deps import Deps

log = logging.getLogger(__name__)


async def admit(deps: Deps, principal: Principal) -> None:
    """Take one request from the key's bucket; UserError RATE_LIMITED when it is empty.
    With Redis unreachable the request is let through (the rate is a guard, not a quota)."""
    settings = deps.settings
    if principal.key_id is None or not settings.rate_limit_per_minute:
        return
    try:
        decision = await deps.limiter.take(
            principal.key_id.hex, settings.rate_limit_per_minute, settings.rate_limit_burst
        )
    except (RedisError, OSError) as exc:
        log.warning("rate limit not checked, Redis is unreachable: %s", exc)
        return
    if not decision.allowed:
        wait = max(decision.retry_after, 0.001)
        raise UserError(
            ErrorCode.RATE_LIMITED,
            f"too many requests for this API key; retry in {wait:.1f} s",
            retry_after=round(wait, 3),
        )


async def check_active_jobs(deps: Deps, principal: Principal) -> None:
    """UserError TOO_MANY_ACTIVE_JOBS when the key already has its most unfinished jobs."""
    limit = deps.settings.max_active_jobs
    if principal.key_id is None or not limit:
        return
    async with deps.sessions() as session:
        active = await session.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(
                JobRow.owner_id == principal.key_id,
                JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
            )
        )
    if (active or 0) >= limit:
        raise UserError(
            ErrorCode.TOO_MANY_ACTIVE_JOBS,
            f"this API key has {limit} unfinished jobs, the most allowed; retry when some finish",
            retry_after=1.0,
        )
