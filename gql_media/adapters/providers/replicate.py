"""The ``replicate`` provider: predictions on Replicate's HTTP API.

A job creates one prediction (``Prefer: wait`` holds the create call a few seconds, so a
fast model answers at once), saves its id on the job, then polls it with backoff until it
ends. A rerun of a job that already has a prediction id (its worker died) waits on that
prediction instead of paying for a new one. Progress comes from the tqdm lines in the
prediction's cumulative ``logs``. Output URLs expire after about an hour, so the images are
downloaded as soon as the prediction succeeds.

With a webhook secret and a public URL configured, predictions also report to
``{public_url}/webhooks/replicate``; the api verifies a delivery, reads it with
``parse_webhook`` and has the worker call ``ReplicateProvider.nudge``, which ends the
current poll wait early. Polling stays the fallback for lost deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import httpx

from gql_media.adapters import http, outbound_http
from gql_media.adapters.outbound import guard_from
from gql_media.adapters.providers import ProviderContext, catalogue
from gql_media.adapters.providers.replicate_api import (
    NAME,
    TERMINAL_STATUSES,
    WEBHOOK_EVENTS,
    WEBHOOK_PATH,
    build_input,
    data_url_bytes,
    output_urls,
    own_input,
    parse_model,
    progress_from_logs,
)
from gql_media.domain import GeneratedImage, GenerateImageRequest, ProviderInfo
from gql_media.errors import (
    ErrorCode,
    JobCanceled,
    PermanentProviderError,
    TransientProviderError,
    UserError,
)
from gql_media.settings import Settings

log = logging.getLogger(__name__)

# consecutive failed polls tolerated before the attempt fails (a rerun resumes the prediction)
MAX_POLL_FAILURES = 3
MAX_EARLY_NUDGES = 1024


class ReplicateProvider:
    """Runs predictions on Replicate; one HTTP client per provider, closed by ``aclose``."""

    name = NAME

    def __init__(
        self,
        *,
        api_token: str | None,
        base_url: str = "https://api.replicate.com",
        model: str = "black-forest-labs/flux-schnell",
        webhook_url: str | None = None,
        wait: int = 5,
        poll_interval: float = 0.5,
        poll_max_interval: float = 5.0,
        max_download_bytes: int = 50 * 1024 * 1024,
        max_pixels: int | None = None,
        timeout: float = 30.0,
        outbound_allow: Sequence[str] = (),
    ) -> None:
        self._token = api_token
        self._guard = guard_from(outbound_allow, base_url)
        self._base = base_url.rstrip("/")
        self._model = model
        self._webhook_url = webhook_url
        self._prefer_wait = wait
        self._poll_interval = poll_interval
        self._poll_max_interval = max(poll_max_interval, poll_interval)
        self._max_bytes = max_download_bytes
        self._max_pixels = max_pixels
        self._timeout_seconds = timeout
        self._connect_timeout = min(timeout, 10.0)
        self._client: httpx.AsyncClient | None = None
        self._nudges: dict[str, asyncio.Event] = {}
        # nudges for predictions not (yet) waited on here: one may arrive between the
        # create call and the wait; most belong to other workers' jobs, hence the bound
        self._early: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicateProvider:
        token, secret = settings.replicate_api_token, settings.replicate_webhook_secret
        webhook_url = None
        if secret is not None and settings.public_url:
            webhook_url = settings.public_url.rstrip("/") + WEBHOOK_PATH
        return cls(
            api_token=token.get_secret_value() if token is not None else None,
            base_url=settings.replicate_base_url,
            model=settings.replicate_model,
            webhook_url=webhook_url,
            wait=settings.replicate_wait,
            poll_interval=settings.replicate_poll_interval,
            poll_max_interval=settings.replicate_poll_max_interval,
            max_download_bytes=settings.max_download_bytes,
            max_pixels=settings.max_image_pixels,
            outbound_allow=settings.outbound_allow,
        )

    @property
    def configured(self) -> bool:
        return bool(self._token)

    def validate(self, request: GenerateImageRequest) -> list[UserError]:
        if not self.configured:
            return [
                UserError(
                    ErrorCode.PROVIDER_NOT_CONFIGURED,
                    "the replicate provider has no API token (GQL_MEDIA_REPLICATE_API_TOKEN)",
                    "provider",
                )
            ]
        model = request.model or self._model
        try:
            ref = parse_model(model)
        except ValueError as exc:
            return [UserError(ErrorCode.INVALID_ARGUMENT, str(exc), "model")]
        return [
            *catalogue.check_model_limits(request, model, catalogue.REPLICATE_MODELS),
            *catalogue.extra_overrides(request.extra, own_input(request, ref)),
        ]

    def describe(self) -> ProviderInfo:
        return catalogue.describe(
            self.name, self.configured, self._model, catalogue.REPLICATE_MODELS
        )

    async def generate(
        self, request: GenerateImageRequest, context: ProviderContext
    ) -> list[GeneratedImage]:
        if not self.configured:
            raise PermanentProviderError(
                "the replicate provider has no API token", code=ErrorCode.PROVIDER_NOT_CONFIGURED
            )
        await context.ensure_running()
        if context.external_id:
            prediction = await self._get(context.external_id)
        else:
            prediction = await self._create(request)
            await self._save(context, str(prediction["id"]))
        prediction = await self._wait(prediction, context)
        return await self._download(prediction)

    async def cancel(self, external_id: str) -> None:
        """Ask Replicate to stop a prediction; failures are logged, never raised."""
        if not self.configured:
            return
        try:
            await http.request_json(
                self._http(),
                "POST",
                f"{self._base}/v1/predictions/{external_id}/cancel",
                provider=NAME,
                headers=self._headers(),
            )
        except Exception as exc:
            log.warning("could not cancel replicate prediction %s: %s", external_id, exc)

    def nudge(self, prediction_id: str) -> None:
        """End the poll wait of ``prediction_id`` now (a webhook said it changed).

        Call it on the event loop running the job; unknown ids are ignored.
        """
        event = self._nudges.get(prediction_id)
        if event is not None:
            event.set()
            return
        self._early[prediction_id] = None
        while len(self._early) > MAX_EARLY_NUDGES:
            self._early.popitem(last=False)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # one client for the API and the outputs: the API host is trusted on its port
            self._client = outbound_http.client(
                self._guard,
                timeout=httpx.Timeout(self._timeout_seconds, connect=self._connect_timeout),
            )
        return self._client

    def _headers(self, **extra: str) -> dict[str, str]:
        # per request, not on the client: output downloads go to other hosts
        return {"Authorization": f"Bearer {self._token}", **extra}

    async def _create(self, request: GenerateImageRequest) -> dict[str, Any]:
        model = parse_model(request.model or self._model)
        body: dict[str, Any] = {"input": build_input(request, model)}
        if model.version is not None:
            url = f"{self._base}/v1/predictions"
            body["version"] = model.version
        else:
            url = f"{self._base}/v1/models/{model.owner}/{model.name}/predictions"
        if self._webhook_url is not None:
            body["webhook"] = self._webhook_url
            body["webhook_events_filter"] = list(WEBHOOK_EVENTS)
        wait = self._prefer_wait
        headers = self._headers(Prefer=f"wait={wait}") if wait else self._headers()
        prediction = await http.request_json(
            self._http(),
            "POST",
            url,
            provider=NAME,
            json=body,
            headers=headers,
            timeout=httpx.Timeout(self._timeout_seconds + wait, connect=self._connect_timeout),
        )
        if not isinstance(prediction.get("id"), str):
            raise PermanentProviderError(
                "replicate created a prediction without an id", code=ErrorCode.PROVIDER_BAD_OUTPUT
            )
        return prediction

    async def _save(self, context: ProviderContext, prediction_id: str) -> None:
        try:
            await context.save_external_id(prediction_id)
        except JobCanceled:
            # the job is gone (canceled, or taken over by a worker that cannot know this
            # prediction): nothing would ever wait on it, so stop paying for it
            await self.cancel(prediction_id)
            raise

    async def _get(self, prediction_id: str) -> dict[str, Any]:
        url = f"{self._base}/v1/predictions/{prediction_id}"
        return await http.request_json(
            self._http(), "GET", url, provider=NAME, headers=self._headers()
        )

    async def _wait(self, prediction: dict[str, Any], context: ProviderContext) -> dict[str, Any]:
        """Poll until the prediction ends; returns it once it succeeded, raises otherwise."""
        prediction_id = str(prediction["id"])
        delay, failures = self._poll_interval, 0
        self._nudges[prediction_id] = asyncio.Event()
        if prediction_id in self._early:
            del self._early[prediction_id]
            self._nudges[prediction_id].set()
        try:
            while True:
                await self._report(prediction, context)
                if prediction.get("status") in TERMINAL_STATUSES:
                    return await self._finished(prediction, context)
                await self._sleep(prediction_id, delay)
                try:
                    prediction = await self._get(prediction_id)
                except TransientProviderError as exc:
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        raise
                    log.info("polling prediction %s failed (%s); retrying", prediction_id, exc)
                    delay = max(delay, exc.retry_after or 0.0)
                    continue
                failures = 0
                delay = min(delay * 1.5, self._poll_max_interval)
        finally:
            self._nudges.pop(prediction_id, None)

    async def _sleep(self, prediction_id: str, delay: float) -> None:
        event = self._nudges[prediction_id]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await event.wait()
        event.clear()

    @staticmethod
    async def _report(prediction: dict[str, Any], context: ProviderContext) -> None:
        fraction = progress_from_logs(prediction.get("logs"))
        if fraction is not None:
            await context.progress(fraction)
        await context.ensure_running()  # progress is throttled; this always notices a cancel

    @staticmethod
    async def _finished(prediction: dict[str, Any], context: ProviderContext) -> dict[str, Any]:
        status = prediction["status"]
        if status == "succeeded":
            return prediction
        if status == "failed":
            error = " ".join(str(prediction.get("error") or "no reason given").split())
            raise PermanentProviderError(
                f"the replicate prediction failed: {error[: http.MAX_DETAIL]}",
                code=ErrorCode.PROVIDER_ERROR,
            )
        await context.ensure_running()  # our own cancel reads as JobCanceled, not a failure
        raise PermanentProviderError(
            f"the replicate prediction was {status} on Replicate's side",
            code=ErrorCode.PROVIDER_CANCELED,
        )

    async def _download(self, prediction: dict[str, Any]) -> list[GeneratedImage]:
        urls = output_urls(prediction.get("output"))
        return await http.all_or_nothing(self._fetch(url) for url in urls)

    async def _fetch(self, url: str) -> GeneratedImage:
        if url.startswith("data:"):
            data = data_url_bytes(url, self._max_bytes)
            return await asyncio.to_thread(
                http.inspect_image, data, http.IMAGE_TYPES, self._max_pixels
            )
        return await http.download(
            self._http(),
            url,
            max_bytes=self._max_bytes,
            provider=NAME,
            max_pixels=self._max_pixels,
        )
