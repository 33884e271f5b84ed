"""``createWatchToken``: a short-lived credential that follows one job, for a browser."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from gql_media.api.subscriptions import Info
from gql_media.api.types import UserError
from gql_media.errors import UserError as DomainUserError
from gql_media.services import limits, watch_tokens

JobIdArgument = Annotated[strawberry.ID, strawberry.argument(name="jobId")]


@strawberry.type(description="A watch token and when it expires.")
class CreateWatchTokenPayload:
    token: str | None = strawberry.field(
        description="Present it where an API key goes (Authorization: Bearer, or the "
        "WebSocket's connectionParams); it allows only following this one job."
    )
    expires_at: datetime | None
    user_errors: list[UserError]


@strawberry.type
class WatchTokenMutations:
    @strawberry.mutation(
        description="A token that lets a browser follow one job (job(id:), jobUpdated, its "
        "media URLs; cancelJob too with allowCancel) without the API key: it expires after "
        "ttlSeconds (GQL_MEDIA_WATCH_TOKEN_TTL when omitted, at most "
        "GQL_MEDIA_WATCH_TOKEN_MAX_TTL) and stops working when the key is revoked."
    )
    async def create_watch_token(
        self,
        info: Info,
        job_id: JobIdArgument,
        ttl_seconds: int | None = None,
        allow_cancel: bool = False,
    ) -> CreateWatchTokenPayload:
        ctx = info.context
        try:
            await limits.admit(ctx.deps, ctx.principal)
            made = await watch_tokens.mint(
                ctx.deps, ctx.auth.watch_key, str(job_id), ttl_seconds, allow_cancel, ctx.principal
            )
        except DomainUserError as exc:
            return CreateWatchTokenPayload(
                token=None, expires_at=None, user_errors=[UserError.from_domain(exc)]
            )
        return CreateWatchTokenPayload(token=made.token, expires_at=made.expires_at, user_errors=[])
