"""Webhooks that providers send us: ``POST /webhooks/replicate``.

A delivery is verified (Standard Webhooks signature, timestamp within five minutes, id not
seen before) and then only wakes the worker waiting on that prediction, which reads the
prediction itself: a webhook never changes a job on its own say-so.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from gql_media.adapters.providers.replicate_api import parse_webhook
from gql_media.adapters.webhook_signing import verify

log = logging.getLogger(__name__)
MAX_BODY = 10 * 1024 * 1024  # a prediction with long logs


async def replicate_webhook(request: Request) -> Response:
    runtime = request.state.runtime
    settings = runtime.settings
    secret = settings.replicate_webhook_secret
    if secret is None:
        return JSONResponse({"error": "webhooks are not configured"}, status_code=404)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": "the body is too large"}, status_code=413)
    except ClientDisconnect:
        return Response(status_code=400)
    try:
        verify(secret.get_secret_value(), request.headers, bytes(body), now=time.time())
        event = parse_webhook(bytes(body))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    try:
        await runtime.deps.publisher.nudge_provider(
            request.headers["webhook-id"], event.prediction_id
        )
    except (RedisError, OSError) as exc:
        log.warning("could not pass on a webhook: %s", exc)
        return JSONResponse({"error": "try again later"}, status_code=503)
    return Response(status_code=204)
