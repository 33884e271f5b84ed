"""POSTing signed webhooks to users' URLs (Standard Webhooks headers, like Replicate's)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from gql_media.adapters.outbound import check_url
from gql_media.adapters.webhook_signing import sign
from gql_media.errors import ProviderError


@dataclass(frozen=True, slots=True)
class Attempt:
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def post_signed(
    client: httpx.AsyncClient,
    url: str,
    *,
    secret: str,
    webhook_id: str,
    body: bytes,
    timeout: float,
) -> Attempt:
    """One delivery attempt, of at most ``timeout`` seconds in all (httpx's own timeout
    bounds each read or write, and a receiver trickling its answer could pass it). Redirects
    are not followed (a 3xx is a failed attempt).

    ``client`` must be one made by ``outbound_http.client``: a refused address is an attempt
    that failed with ``OUTBOUND_BLOCKED``."""
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        check_url(url)
    except ProviderError as exc:
        return Attempt(None, f"{exc.code.value}: {exc.message}", elapsed())
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "gql-media-webhooks",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }
    try:
        async with asyncio.timeout(timeout):
            response = await client.post(
                url, content=body, headers=headers, timeout=timeout, follow_redirects=False
            )
    except TimeoutError:
        return Attempt(None, f"timed out after {timeout:g}s", elapsed())
    except ProviderError as exc:
        return Attempt(None, f"{exc.code.value}: {exc.message}"[:500], elapsed())
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], elapsed())
    error = None if response.is_success else f"HTTP {response.status_code}"
    return Attempt(response.status_code, error, elapsed())
