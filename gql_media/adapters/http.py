"""HTTP helpers shared by the remote providers: error translation and capped downloads.

Every provider speaks to its API through httpx; this module is where httpx's responses
and exceptions become the provider errors of ``gql_media.errors``:

- 429 → TransientProviderError with ``retry_after`` from the Retry-After header,
- 5xx, timeouts and connection errors → TransientProviderError,
- 401 and 403 → PermanentProviderError ``PROVIDER_AUTH_FAILED``,
- any other 4xx → PermanentProviderError ``PROVIDER_REJECTED`` with the provider's detail.
"""

from __future__ import annotations

import asyncio
import io
import json as jsonlib
import time
from collections.abc import AsyncIterator, Awaitable, Collection, Iterable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from PIL import Image

from gql_media.adapters.outbound import check_url
from gql_media.domain import GeneratedImage, decimal
from gql_media.errors import (
    ErrorCode,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)

MAX_REDIRECTS = 5
T = TypeVar("T")
MAX_DETAIL = 500
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
_PILLOW_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def detail(response: httpx.Response) -> str:
    """The provider's explanation of a failed response, cut to ``MAX_DETAIL`` characters.

    Understands ``{"detail": ...}`` (Replicate, RFC 7807) and ``{"error": {"message": ...}}``
    (OpenAI); anything else is the body as text.
    """
    text = response.text
    try:
        body = jsonlib.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            text = str(error["message"])
        elif body.get("detail"):
            text = str(body["detail"])
        elif isinstance(error, str) and error:
            text = error
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def response_error(response: httpx.Response, provider: str) -> ProviderError:
    """The provider error for a failed (non-2xx) response; its body must have been read."""
    status = response.status_code
    if status == 429:
        wait = retry_after(response.headers.get("retry-after"))
        return TransientProviderError(
            f"{provider} is rate limiting requests (HTTP 429): {detail(response)}",
            code=ErrorCode.PROVIDER_UNAVAILABLE,
            retry_after=wait,
        )
    if status >= 500:
        return TransientProviderError(
            f"{provider} failed with HTTP {status}: {detail(response)}",
            code=ErrorCode.PROVIDER_UNAVAILABLE,
        )
    if status in (401, 403):
        return PermanentProviderError(
            f"the provider refused the API token ({provider}, HTTP {status})",
            code=ErrorCode.PROVIDER_AUTH_FAILED,
        )
    return PermanentProviderError(
        f"{provider} rejected the request (HTTP {status}): {detail(response)}",
        code=ErrorCode.PROVIDER_REJECTED,
    )


def transport_error(exc: httpx.TransportError, provider: str) -> TransientProviderError:
    """Timeouts become PROVIDER_TIMEOUT, every other transport failure PROVIDER_UNAVAILABLE."""
    if isinstance(exc, httpx.TimeoutException):
        return TransientProviderError(
            f"{provider} did not answer in time ({type(exc).__name__})",
            code=ErrorCode.PROVIDER_TIMEOUT,
        )
    return TransientProviderError(
        f"could not reach {provider}: {type(exc).__name__}: {exc}",
        code=ErrorCode.PROVIDER_UNAVAILABLE,
    )


@asynccontextmanager
async def translated(provider: str) -> AsyncIterator[None]:
    """Turn httpx transport exceptions raised inside the block into provider errors."""
    try:
        yield
    except httpx.TransportError as exc:
        raise transport_error(exc, provider) from exc


def raise_for_status(response: httpx.Response, provider: str) -> None:
    """Raise the provider error matching a non-2xx response."""
    if not response.is_success:
        raise response_error(response, provider)


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    json: object = None,
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
) -> dict[str, Any]:
    """Send a request and return its JSON object body; every failure is a provider error."""
    async with translated(provider):
        response = await client.request(
            method,
            url,
            json=json,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )
    raise_for_status(response, provider)
    try:
        body = response.json()
    except ValueError as exc:
        raise TransientProviderError(
            f"{provider} answered HTTP {response.status_code} with a body that is not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise PermanentProviderError(
            f"{provider} answered with JSON that is not an object",
            code=ErrorCode.PROVIDER_BAD_OUTPUT,
        )
    return body


def _bad_output(message: str) -> PermanentProviderError:
    return PermanentProviderError(message, code=ErrorCode.PROVIDER_BAD_OUTPUT)


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def inspect_image(
    data: bytes, allowed_types: Collection[str] = IMAGE_TYPES, max_pixels: int | None = None
) -> GeneratedImage:
    """``data`` as a GeneratedImage whose type and size come from the bytes themselves.

    Raises PROVIDER_BAD_OUTPUT when Pillow cannot read or decode the bytes, finds another
    type than ``allowed_types``, or the image has more than ``max_pixels`` pixels.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = _PILLOW_TYPES.get(image.format or "")
            width, height = image.size
            image.verify()
    except Exception as exc:
        raise _bad_output(f"the provider's output is not a readable image: {exc}") from exc
    if kind is None or kind not in allowed_types:
        raise _bad_output(f"the provider's output is {kind or 'an unsupported image type'}")
    if max_pixels is not None and width * height > max_pixels:
        raise _bad_output(f"the provider's output has {width}x{height} pixels, over the limit")
    try:
        # verify() checks a PNG's chunk checksums, not its compressed pixels: decode them
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except MemoryError:
        raise
    except Exception as exc:
        raise _bad_output(f"the provider's output is a damaged image: {exc}") from exc
    return GeneratedImage(data=data, content_type=kind, width=width, height=height)


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    allowed_types: Collection[str] = IMAGE_TYPES,
    provider: str = "the provider",
    max_pixels: int | None = None,
) -> GeneratedImage:
    """Fetch the image at ``url``, refusing more than ``max_bytes`` while it streams.

    ``url`` comes from outside the configuration: ``client`` must be one made by
    ``outbound_http.client``, which checks every address it connects to; each redirect hop
    must be an http(s) URL (else OUTBOUND_BLOCKED). Both the declared Content-Type and the
    bytes (sniffed by Pillow) must be one of ``allowed_types``; otherwise, or when too
    large, PermanentProviderError ``PROVIDER_BAD_OUTPUT``. HTTP and transport failures are
    translated as elsewhere.
    """
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url)
        async with (
            translated(provider),
            client.stream("GET", url, follow_redirects=False) as response,
        ):
            if response.is_redirect and "location" in response.headers:
                url = str(response.url.join(response.headers["location"]))
                continue
            data = await _read_image(response, max_bytes, allowed_types, provider)
        return await asyncio.to_thread(inspect_image, data, allowed_types, max_pixels)
    raise _bad_output(f"more than {MAX_REDIRECTS} redirects")


async def _read_image(
    response: httpx.Response, max_bytes: int, allowed_types: Collection[str], provider: str
) -> bytes:
    if not response.is_success:
        await response.aread()
        raise response_error(response, provider)
    declared = _media_type(response.headers.get("content-type"))
    if declared not in allowed_types:
        raise _bad_output(
            f"the provider's output has content type {declared or 'none'!r}; "
            f"expected one of {', '.join(sorted(allowed_types))}"
        )
    length = decimal(response.headers.get("content-length"))
    if length is not None and length > max_bytes:
        raise _bad_output(f"the provider's output is {length} bytes, over {max_bytes}")
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) > max_bytes:
            raise _bad_output(f"the provider's output is larger than {max_bytes} bytes")
    return bytes(chunks)


async def all_or_nothing(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run ``awaitables`` concurrently; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
