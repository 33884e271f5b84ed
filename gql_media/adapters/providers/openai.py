"""The ``openai`` provider: OpenAI's images API, or any server that speaks it.

One ``POST {base}/v1/images/generations`` makes every image of a job; the answer carries
each image as base64 (``b64_json``) or as a URL, which is downloaded at once with the
size cap. The call is synchronous, so there is no provider-side id to resume and no
progress before it returns. ``request.extra`` adds to the request body, so any option of
the API (``quality``, ``background``, ``output_format``...) can be passed through; it cannot
replace what the request's fields set (``model``, ``n``, ``size``...).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from typing import Any

import httpx

from gql_media.adapters import http, outbound_http
from gql_media.adapters.outbound import guard_from
from gql_media.adapters.providers import ProviderContext, catalogue
from gql_media.domain import GeneratedImage, GenerateImageRequest, ProviderInfo
from gql_media.errors import ErrorCode, PermanentProviderError, UserError
from gql_media.settings import Settings

NAME = "openai"


def generations_url(base_url: str) -> str:
    """The generations endpoint under ``base_url``, which may or may not end in ``/v1``."""
    base = base_url.rstrip("/").removesuffix("/v1")
    return f"{base}/v1/images/generations"


def _bad_output(message: str) -> PermanentProviderError:
    return PermanentProviderError(message, code=ErrorCode.PROVIDER_BAD_OUTPUT)


class OpenAIProvider:
    """Generates images with one call to an OpenAI-style images API."""

    name = NAME

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None = None,
        model: str = "gpt-image-1",
        response_format: str | None = None,
        max_download_bytes: int = 50 * 1024 * 1024,
        max_pixels: int | None = None,
        timeout: float = 300.0,
        outbound_allow: Sequence[str] = (),
    ) -> None:
        self._url = generations_url(base_url) if base_url else None
        self._guard = guard_from(outbound_allow, base_url)
        self._api_key = api_key
        self._model = model
        self._response_format = response_format
        self._max_bytes = max_download_bytes
        self._max_pixels = max_pixels
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIProvider:
        key = settings.openai_api_key
        return cls(
            base_url=settings.openai_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            model=settings.openai_model,
            response_format=settings.openai_response_format,
            max_download_bytes=settings.max_download_bytes,
            max_pixels=settings.max_image_pixels,
            timeout=settings.job_timeout,
            outbound_allow=settings.outbound_allow,
        )

    def validate(self, request: GenerateImageRequest) -> list[UserError]:
        if self._url is None:
            return [
                UserError(
                    ErrorCode.PROVIDER_NOT_CONFIGURED,
                    "the openai provider has no base URL (GQL_MEDIA_OPENAI_BASE_URL)",
                    "provider",
                )
            ]
        if request.negative_prompt:
            return [
                UserError(
                    ErrorCode.INVALID_ARGUMENT,
                    "the openai provider does not support negativePrompt",
                    "negativePrompt",
                )
            ]
        overrides = catalogue.extra_overrides(request.extra, self._own_body(request))
        if not self._is_openai:  # a self-hosted server decides what its models accept
            return overrides
        model = request.model or self._model
        return [*catalogue.check_model_limits(request, model, catalogue.OPENAI_MODELS), *overrides]

    def _own_body(self, request: GenerateImageRequest) -> dict[str, Any]:
        """The request body that the fields of ``request`` make, without ``extra``."""
        body: dict[str, Any] = {
            "model": request.model or self._model,
            "prompt": request.prompt,
            "n": request.num_outputs,
            "size": f"{request.width}x{request.height}",
        }
        if self._response_format is not None:
            body["response_format"] = self._response_format
        return body

    @property
    def _is_openai(self) -> bool:
        return self._url is not None and httpx.URL(self._url).host == "api.openai.com"

    def describe(self) -> ProviderInfo:
        return catalogue.describe(
            self.name, self._url is not None, self._model, catalogue.OPENAI_MODELS
        )

    async def generate(
        self, request: GenerateImageRequest, context: ProviderContext
    ) -> list[GeneratedImage]:
        if self._url is None:
            raise PermanentProviderError(
                "the openai provider has no base URL", code=ErrorCode.PROVIDER_NOT_CONFIGURED
            )
        await context.ensure_running()
        body = catalogue.with_extra(self._own_body(request), request.extra)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        answer = await http.request_json(
            self._http(), "POST", self._url, provider=NAME, json=body, headers=headers
        )
        items = answer.get("data")
        if not isinstance(items, list) or not items:
            raise _bad_output("the openai answer has no images in data[]")
        return await http.all_or_nothing(self._image(item) for item in items)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # one client for the API and the outputs: the API host is trusted on its port
            self._client = outbound_http.client(self._guard, timeout=self._timeout)
        return self._client

    async def _image(self, item: object) -> GeneratedImage:
        if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
            data = self._decode(item["b64_json"])
            return await asyncio.to_thread(
                http.inspect_image, data, http.IMAGE_TYPES, self._max_pixels
            )
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            return await http.download(
                self._http(),
                item["url"],
                max_bytes=self._max_bytes,
                provider=NAME,
                max_pixels=self._max_pixels,
            )
        raise _bad_output("an openai image has neither b64_json nor url")

    def _decode(self, text: str) -> bytes:
        if len(text) > (self._max_bytes + 2) // 3 * 4:
            raise _bad_output(f"an openai image is larger than {self._max_bytes} bytes")
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise _bad_output("an openai image's b64_json is not valid base64") from exc
