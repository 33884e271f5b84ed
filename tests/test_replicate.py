"""The replicate provider against a fake Replicate over real sockets, and through the service."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from fakeredis.aioredis import FakeRedis
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gql_media.adapters import http
from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.providers.replicate import ReplicateProvider
from gql_media.adapters.providers.replicate_api import (
    nearest_aspect_ratio,
    parse_model,
    parse_webhook,
    progress_from_logs,
)
from gql_media.adapters.webhook_signing import (
    InvalidWebhook,
    remember_webhook_id,
    sign,
    verify,
)
from gql_media.domain import OutputFormat
from gql_media.errors import (
    ErrorCode,
    JobCanceled,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from tests.fakes import RecordingContext, image_request, pixels, serving
from tests.fakes.replicate_server import FakeReplicate, Script, running_replicate
from tests.media import damaged_png
from tests.support import JOB_FIELDS, free_port, graphql_ws, start_server

VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    async with running_replicate() as server:
        yield server


@pytest.fixture
async def make_provider(fake: FakeReplicate) -> AsyncIterator[Callable[..., ReplicateProvider]]:
    """Providers pointed at the fake, polling fast; closed after the test."""
    made: list[ReplicateProvider] = []

    def make(**options: Any) -> ReplicateProvider:
        values: dict[str, Any] = {
            "api_token": fake.token,
            "base_url": fake.url,
            "poll_interval": 0.001,
            "poll_max_interval": 0.01,
        }
        values.update(options)
        provider = ReplicateProvider(**values)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def provider(make_provider: Callable[..., ReplicateProvider]) -> ReplicateProvider:
    return make_provider()


async def failure_of(
    provider: ReplicateProvider, context: RecordingContext | None = None, **fields: Any
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(image_request(**fields), context or RecordingContext())
    return caught.value


# the create call: routing and input


async def test_a_model_name_creates_through_the_models_endpoint_with_mapped_input(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    request = image_request(
        model="black-forest-labs/flux-schnell",
        negative_prompt="fog",
        width=1024,
        height=576,
        num_outputs=2,
        seed=7,
        output_format=OutputFormat.WEBP,
        extra={"num_inference_steps": 2, "seed": 8},
    )
    images = await provider.generate(request, RecordingContext())

    [call] = fake.creates
    assert call.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert call.headers["authorization"] == f"Bearer {fake.token}"
    assert call.headers["prefer"] == "wait=5"
    assert "version" not in call.body and "webhook" not in call.body
    assert call.body["input"] == {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "fog",
        "width": 1024,
        "height": 576,
        "aspect_ratio": "16:9",
        "num_outputs": 2,
        "seed": 7,  # extra adds options; it never replaces what the fields set
        "output_format": "webp",
        "num_inference_steps": 2,
    }
    assert [(i.content_type, i.width, i.height) for i in images] == [("image/webp", 1024, 576)] * 2


@pytest.mark.parametrize("model", [VERSION, f"stability-ai/sdxl:{VERSION}"])
async def test_a_version_creates_through_the_predictions_endpoint(
    fake: FakeReplicate, provider: ReplicateProvider, model: str
) -> None:
    await provider.generate(image_request(model=model), RecordingContext())

    [call] = fake.creates
    assert call.path == "/v1/predictions"
    assert call.body["version"] == VERSION
    assert "aspect_ratio" not in call.body["input"]  # not a FLUX model
    assert call.body["input"]["width"] == 256 and call.body["input"]["output_format"] == "png"


def test_models_are_parsed_and_checked() -> None:
    assert parse_model("black-forest-labs/flux-schnell").version is None
    assert parse_model(f"a/b:{VERSION}").version == VERSION
    for bad in ("flux", "a/b/c", "a/b:123", "/b", VERSION[:-1]):
        with pytest.raises(ValueError):
            parse_model(bad)


def test_the_nearest_aspect_ratio_is_chosen() -> None:
    sizes = [(512, 512), (1920, 1080), (2048, 880), (768, 1024), (640, 1536), (1000, 999)]
    ratios = [nearest_aspect_ratio(w, h) for w, h in sizes]
    assert ratios == ["1:1", "16:9", "21:9", "3:4", "9:21", "1:1"]


def test_validation_reports_a_missing_token_and_a_malformed_model() -> None:
    unconfigured = ReplicateProvider(api_token=None)
    [error] = unconfigured.validate(image_request())
    assert (error.code, error.field) == (ErrorCode.PROVIDER_NOT_CONFIGURED, "provider")

    configured = ReplicateProvider(api_token="r8_x")
    assert configured.validate(image_request()) == []
    [error] = configured.validate(image_request(model="not a model"))
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "model")


async def test_generate_without_a_token_is_not_configured() -> None:
    error = await failure_of(ReplicateProvider(api_token=None))
    assert error.code is ErrorCode.PROVIDER_NOT_CONFIGURED and not error.retryable


# waiting: polling, progress, resume


async def test_polls_to_success_reporting_progress_from_the_logs(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    context = RecordingContext()
    polls_when_saved: list[int] = []
    context.on_save = lambda _: polls_when_saved.append(len(fake.gets))

    [image] = await provider.generate(image_request(width=320, height=192), context)

    [prediction] = fake.predictions.values()
    assert context.saved == [prediction.id] and polls_when_saved == [0]
    assert fake.gets == [prediction.id] * 5  # processing x4, then succeeded
    assert sorted(set(context.progress_values)) == [0.0, 0.4, 0.8, 1.0]
    assert context.progress_values == sorted(context.progress_values)
    assert context.checks >= 5  # every poll checks for a cancel
    [url] = prediction.output
    content_type, data = fake.files[url.rsplit("/", 1)[1]]
    assert image.data == data
    assert (image.content_type, image.width, image.height) == (content_type, 320, 192)


async def test_a_prediction_finished_within_prefer_wait_needs_no_polling(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.script = Script(finish_within_wait=True, single_output=True)
    context = RecordingContext()
    [image] = await provider.generate(image_request(), context)
    assert fake.gets == [] and len(context.saved) == 1
    assert image.content_type == "image/png"


async def test_a_rerun_waits_on_the_saved_prediction_instead_of_creating_one(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    earlier = fake.add_prediction()
    earlier.input = {"width": 128, "height": 96, "output_format": "png", "num_outputs": 1}
    context = RecordingContext(external_id=earlier.id, attempt=2)

    [image] = await provider.generate(image_request(), context)

    assert fake.creates == [] and context.saved == []
    assert fake.gets[0] == earlier.id and earlier.status == "succeeded"
    assert (image.width, image.height) == (128, 96)


async def test_one_failed_poll_is_retried_within_the_attempt(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.fail("get", 500, {"detail": "Internal server error"})
    fake.fail("get", 429, {"detail": "throttled"}, Retry_After="0")
    await provider.generate(image_request(), RecordingContext())
    assert len(fake.creates) == 1 and len(fake.gets) == 7


async def test_polls_failing_every_time_end_the_attempt_as_transient(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.fail("get", 503, "upstream unavailable", times=10)
    context = RecordingContext()
    error = await failure_of(provider, context)
    assert isinstance(error, TransientProviderError)
    assert error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert len(context.saved) == 1  # so the next attempt resumes the prediction


# outcomes


async def test_a_failed_prediction_is_a_permanent_provider_error(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.script = Script(outcome="failed", error="NSFW content detected. Try another prompt.")
    error = await failure_of(provider)
    assert isinstance(error, PermanentProviderError)
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert "NSFW content detected" in error.message


@pytest.mark.parametrize("outcome", ["canceled", "aborted"])
async def test_a_prediction_stopped_on_replicates_side_is_provider_canceled(
    fake: FakeReplicate, provider: ReplicateProvider, outcome: str
) -> None:
    fake.script = Script(outcome=outcome)
    error = await failure_of(provider)
    assert error.code is ErrorCode.PROVIDER_CANCELED and not error.retryable


async def test_canceling_our_job_while_waiting_raises_job_canceled(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    context = RecordingContext(cancel_at=0.4)
    with pytest.raises(JobCanceled):
        await provider.generate(image_request(), context)
    [prediction] = fake.predictions.values()
    assert prediction.status == "processing"  # the runner decides whether to cancel it


async def test_a_job_gone_before_its_prediction_was_saved_cancels_the_prediction(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    class Gone(RecordingContext):
        async def save_external_id(self, external_id: str) -> None:
            raise JobCanceled("the job is no longer running here")

    with pytest.raises(JobCanceled):
        await provider.generate(image_request(), Gone())
    [prediction] = fake.predictions.values()
    assert fake.cancels == [prediction.id] and prediction.status == "canceled"


async def test_cancel_stops_the_prediction_and_never_raises(
    fake: FakeReplicate, provider: ReplicateProvider, caplog: pytest.LogCaptureFixture
) -> None:
    prediction = fake.add_prediction()
    await provider.cancel(prediction.id)
    assert fake.cancels == [prediction.id] and prediction.status == "canceled"

    fake.fail("cancel", 500, {"detail": "boom"})
    await provider.cancel(prediction.id)
    await provider.cancel("p-unknown")  # 404
    assert fake.cancels == [prediction.id] * 2 + ["p-unknown"]
    assert sum("could not cancel" in r.message for r in caplog.records) == 2


# outputs


async def test_inline_data_url_outputs_are_decoded_and_capped(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    fake.script = Script(data_urls=True)
    [image] = await make_provider().generate(image_request(), RecordingContext())
    [(_, served)] = fake.files.values()
    assert image.data == served
    error = await failure_of(make_provider(max_download_bytes=500))
    assert error.code is ErrorCode.PROVIDER_BAD_OUTPUT and "bytes" in error.message


async def test_outputs_over_the_size_limit_are_refused(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    error = await failure_of(make_provider(max_download_bytes=500), width=512, height=512)
    assert error.code is ErrorCode.PROVIDER_BAD_OUTPUT and "bytes" in error.message


@pytest.mark.parametrize(
    ("file_type", "file_body"),
    [("text/html", b"<html>not an image</html>"), ("image/png", b"not an image at all")],
)
async def test_outputs_that_are_not_images_are_refused(
    fake: FakeReplicate, provider: ReplicateProvider, file_type: str, file_body: bytes
) -> None:
    fake.script = Script(file_type=file_type, file_body=file_body)
    error = await failure_of(provider)
    assert error.code is ErrorCode.PROVIDER_BAD_OUTPUT and not error.retryable


async def test_a_damaged_image_output_is_refused(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    # a PNG whose chunks (and their CRCs) are sound and whose pixel data is no zlib stream
    fake.script = Script(file_type="image/png", file_body=damaged_png())
    error = await failure_of(provider)
    assert error.code is ErrorCode.PROVIDER_BAD_OUTPUT and "damaged" in error.message


async def test_a_declared_type_is_checked_even_when_the_bytes_are_an_image(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.script = Script(file_type="application/octet-stream")
    error = await failure_of(provider)
    assert error.code is ErrorCode.PROVIDER_BAD_OUTPUT and "octet-stream" in error.message


# HTTP failures


async def test_a_bad_token_is_provider_auth_failed(
    make_provider: Callable[..., ReplicateProvider],
) -> None:
    error = await failure_of(make_provider(api_token="r8_wrong"))
    assert isinstance(error, PermanentProviderError)
    assert error.code is ErrorCode.PROVIDER_AUTH_FAILED
    assert "the provider refused the API token" in error.message


async def test_a_422_is_rejected_with_replicates_detail(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    detail = "input.num_outputs: Must be less than or equal to 4 " + "x" * 900
    fake.fail("create", 422, {"title": "Input validation failed", "detail": detail})
    error = await failure_of(provider)
    assert error.code is ErrorCode.PROVIDER_REJECTED and not error.retryable
    assert "Must be less than or equal to 4" in error.message
    assert len(error.message) < 600


@pytest.mark.parametrize("header", ["7", "http-date"])
async def test_a_429_is_transient_and_honours_retry_after(
    fake: FakeReplicate, provider: ReplicateProvider, header: str
) -> None:
    if header == "http-date":
        header = format_datetime(datetime.now(UTC) + timedelta(seconds=8), usegmt=True)
    body = {"detail": "Request was throttled. Expected available in 7 seconds."}
    fake.fail("create", 429, body, Retry_After=header)
    error = await failure_of(provider)
    assert isinstance(error, TransientProviderError)
    assert error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert error.retry_after is not None and 6 <= error.retry_after <= 8
    assert "throttled" in error.message and fake.creates == []


async def test_a_5xx_on_create_is_transient(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.fail("create", 500, "Internal Server Error")
    error = await failure_of(provider)
    assert isinstance(error, TransientProviderError) and error.retry_after is None
    await provider.generate(image_request(), RecordingContext())  # the next attempt works


async def test_a_timeout_is_provider_timeout(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider]
) -> None:
    fake.hang("create")
    error = await failure_of(make_provider(timeout=0.2, wait=0))
    assert isinstance(error, TransientProviderError) and error.code is ErrorCode.PROVIDER_TIMEOUT


async def test_an_unreachable_server_is_provider_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = ReplicateProvider(api_token="r8_x", base_url=f"http://127.0.0.1:{port}")
    try:
        error = await failure_of(provider)
    finally:
        await provider.aclose()
    assert isinstance(error, TransientProviderError)
    assert error.code is ErrorCode.PROVIDER_UNAVAILABLE


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert http.retry_after("12") == 12.0
    assert http.retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert http.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert http.retry_after("soon") is None and http.retry_after(None) is None


def test_progress_is_the_last_tqdm_percentage_in_the_logs() -> None:
    logs = (
        "Using seed: 1\n  0%|          | 0/4 [00:00<?, ?it/s]\n 50%|█████     | 2/4 [00:01<00:01]\n"
    )
    assert progress_from_logs(logs) == 0.5
    assert progress_from_logs("loading weights\n") is None and progress_from_logs(None) is None


# webhooks

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def vector_headers(
    signature: str = VECTOR_SIGNATURE, timestamp: int = VECTOR_TIMESTAMP
) -> dict[str, str]:
    return {
        "Webhook-Id": VECTOR_ID,
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": signature,
    }


def test_signatures_match_the_standard_webhooks_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY.encode(), now=VECTOR_TIMESTAMP + 10)
    rotated = f"v1,{base64.b64encode(b'old key signature').decode()} {VECTOR_SIGNATURE}"
    verify(VECTOR_SECRET, vector_headers(rotated), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    ("headers", "body", "now", "reason"),
    [
        (vector_headers(), VECTOR_BODY + " ", VECTOR_TIMESTAMP, "no webhook-signature matches"),
        (
            vector_headers("v1,AAAA" + VECTOR_SIGNATURE[7:]),
            VECTOR_BODY,
            VECTOR_TIMESTAMP,
            "no webhook-signature matches",
        ),
        (vector_headers(), VECTOR_BODY, VECTOR_TIMESTAMP + 301, "too old"),
        (vector_headers(), VECTOR_BODY, VECTOR_TIMESTAMP - 301, "in the future"),
        (vector_headers(timestamp=0) | {"Webhook-Timestamp": "x"}, VECTOR_BODY, 0, "integer"),
        ({"webhook-id": VECTOR_ID}, VECTOR_BODY, VECTOR_TIMESTAMP, "missing"),
    ],
)
def test_forged_stale_or_incomplete_deliveries_are_refused(
    headers: dict[str, str], body: str, now: float, reason: str
) -> None:
    with pytest.raises(InvalidWebhook, match=reason):
        verify(VECTOR_SECRET, headers, body, now=now)


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    """The test Redis when configured, else an in-process one."""
    url = os.environ.get("GQL_MEDIA_TEST_REDIS_URL")
    client: Redis = Redis.from_url(url) if url else FakeRedis()
    yield client
    await client.aclose()


async def test_a_replayed_webhook_id_is_refused(redis_client: Redis) -> None:
    namespace = f"gql_media_test_{uuid.uuid4().hex[:10]}"
    assert await remember_webhook_id(redis_client, namespace, "msg_1", ttl=60)
    assert not await remember_webhook_id(redis_client, namespace, "msg_1", ttl=60)
    assert await remember_webhook_id(redis_client, namespace, "msg_2", ttl=60)
    assert 0 < await redis_client.ttl(f"{namespace}:webhook-seen:msg_1") <= 60


def test_parse_webhook_reads_the_prediction_id_and_status() -> None:
    event = parse_webhook(b'{"id": "p1", "status": "succeeded", "output": ["u"]}')
    assert (event.prediction_id, event.status) == ("p1", "succeeded")
    for bad in (b"not json", b"[]", b'{"status": "succeeded"}'):
        with pytest.raises(ValueError):
            parse_webhook(bad)


def webhook_receiver(
    nudge: Callable[[str], None], secret: str, redis: Redis, namespace: str
) -> Starlette:
    """What the api's webhook route does: verify, drop replays, nudge the provider."""

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            verify(secret, request.headers, body, now=time.time())
        except InvalidWebhook as exc:
            return JSONResponse({"error": exc.reason}, status_code=400)
        if not await remember_webhook_id(redis, namespace, request.headers["webhook-id"]):
            return Response(status_code=200)
        nudge(parse_webhook(body).prediction_id)
        return Response(status_code=204)

    return Starlette(routes=[Route("/webhooks/replicate", receive, methods=["POST"])])


async def test_a_webhook_ends_the_poll_wait_at_once(
    fake: FakeReplicate, make_provider: Callable[..., ReplicateProvider], redis_client: Redis
) -> None:
    fake.script = Script(advance_on_get=False)
    namespace = f"gql_media_test_{uuid.uuid4().hex[:10]}"
    workers: list[ReplicateProvider] = []  # the provider needs the receiver's URL first
    app = webhook_receiver(
        lambda prediction_id: workers[0].nudge(prediction_id),
        fake.webhook_secret,
        redis_client,
        namespace,
    )
    async with serving(app) as receiver_url:
        # a poll interval far beyond the test's timeout: only a webhook can finish in time
        provider = make_provider(
            webhook_url=f"{receiver_url}/webhooks/replicate",
            poll_interval=120,
            poll_max_interval=120,
        )
        workers.append(provider)
        job = asyncio.create_task(provider.generate(image_request(), RecordingContext()))
        prediction = await fake.wait_for_prediction()
        await fake.advance(prediction.id, to_end=True)
        [image] = await asyncio.wait_for(job, timeout=10)

    [call] = fake.creates
    assert call.body["webhook"] == f"{receiver_url}/webhooks/replicate"
    assert call.body["webhook_events_filter"] == ["start", "output", "logs", "completed"]
    assert (prediction.id, "completed:204") in fake.webhooks_sent
    assert all(event.endswith(":204") for _, event in fake.webhooks_sent)
    assert len(fake.gets) <= len(fake.webhooks_sent)  # each poll was woken by a delivery
    assert image.data == next(iter(fake.files.values()))[1]


# end to end, through the api and a worker


async def test_generate_image_with_replicate_end_to_end(
    fake: FakeReplicate, settings_factory: Any
) -> None:
    settings = settings_factory(
        replicate_api_token=fake.token,
        replicate_base_url=fake.url,
        replicate_poll_interval=0.01,
        replicate_poll_max_interval=0.05,
    )
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=True) as server:
        payload = await server.generate(
            prompt="a red fox in snow", provider="replicate", width=320, height=192, seed=9
        )
        assert payload["userErrors"] == []
        async with graphql_ws(server.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": payload["job"]["id"]})
            updates = [p["data"]["jobUpdated"] for p in await ws.collect(op)]
        final = updates[-1]
        assert final["status"] == "SUCCEEDED", final
        assert (final["provider"], final["attempts"]) == ("replicate", 1)
        [output] = final["outputs"]
        media = await server.http.get(output["url"])

    assert len(fake.creates) == 1
    assert fake.creates[0].body["input"]["seed"] == 9
    [(_, served)] = fake.files.values()
    assert media.status_code == 200 and media.content == served
    assert pixels(media.content) == pixels(served)
    assert (output["contentType"], output["width"], output["height"]) == ("image/png", 320, 192)


async def test_a_refused_token_fails_the_job_without_retries(
    fake: FakeReplicate, settings_factory: Any
) -> None:
    settings = settings_factory(replicate_api_token="r8_revoked", replicate_base_url=fake.url)
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=True) as server:
        payload = await server.generate(provider="replicate")
        async with graphql_ws(server.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": payload["job"]["id"]})
            final = [p["data"]["jobUpdated"] for p in await ws.collect(op)][-1]
    assert final["status"] == "FAILED" and final["attempts"] == 1
    assert final["error"]["code"] == "PROVIDER_AUTH_FAILED"
    assert final["error"]["retryable"] is False


async def test_replicate_without_a_token_is_a_user_error(settings_factory: Any) -> None:
    settings = settings_factory(replicate_api_token=None)
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=False) as server:
        payload = await server.generate(provider="replicate")
    assert payload["job"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        ("provider", "PROVIDER_NOT_CONFIGURED")
    ]


async def test_webhooks_through_the_api_finish_a_job_without_polling(
    fake: FakeReplicate, settings_factory: Any
) -> None:
    fake.script = Script(advance_on_get=False)
    port = free_port()
    settings = settings_factory(
        replicate_api_token=fake.token,
        replicate_base_url=fake.url,
        replicate_webhook_secret=fake.webhook_secret,
        public_url=f"http://127.0.0.1:{port}",
        # polls far beyond the test's timeout: only the webhooks can finish the job in time
        replicate_poll_interval=120,
        replicate_poll_max_interval=120,
    )
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=True, port=port) as server:
        payload = await server.generate(provider="replicate")
        async with graphql_ws(server.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": payload["job"]["id"]})
            prediction = await fake.wait_for_prediction()
            await fake.advance(prediction.id, to_end=True)
            final = [p["data"]["jobUpdated"] for p in await ws.collect(op)][-1]
        assert final["status"] == "SUCCEEDED", final
        assert (prediction.id, "completed:204") in fake.webhooks_sent

        body = b'{"id": "p1", "status": "succeeded"}'
        now = int(time.time())
        signed = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(now),
            "webhook-signature": sign(fake.webhook_secret, "msg_1", now, body),
        }
        first = await server.http.post("/webhooks/replicate", content=body, headers=signed)
        replay = await server.http.post("/webhooks/replicate", content=body, headers=signed)
        assert (first.status_code, replay.status_code) == (204, 204)
        forged = {**signed, "webhook-id": "msg_2"}  # the signature covers the id
        refused = await server.http.post("/webhooks/replicate", content=body, headers=forged)
        assert refused.status_code == 400 and "error" in refused.json()
        stale = {**signed, "webhook-timestamp": str(now - 3600)}
        assert (
            await server.http.post("/webhooks/replicate", content=body, headers=stale)
        ).status_code == 400


async def test_webhook_route_is_absent_without_a_secret(server: Any) -> None:
    response = await server.http.post("/webhooks/replicate", content=b"{}")
    assert response.status_code == 404


async def test_cancel_job_cancels_the_running_prediction(
    fake: FakeReplicate, settings_factory: Any
) -> None:
    fake.script = Script(advance_on_get=False)
    settings = settings_factory(
        replicate_api_token=fake.token,
        replicate_base_url=fake.url,
        replicate_poll_interval=0.01,
        replicate_poll_max_interval=0.05,
    )
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=True) as server:
        payload = await server.generate(provider="replicate")
        job_id = payload["job"]["id"]
        async with graphql_ws(server.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            prediction = await fake.wait_for_prediction()
            while True:
                update = await ws.next_payload(op)
                assert update is not None
                if update["data"]["jobUpdated"]["status"] == "RUNNING":
                    break
            canceled = await server.graphql(
                "mutation($id: ID!) { cancelJob(id: $id) { job { status } userErrors { code } } }",
                {"id": job_id},
            )
            assert canceled["data"]["cancelJob"]["job"]["status"] == "CANCELED"
            await asyncio.wait_for(fake.canceled.wait(), timeout=10)
    assert fake.cancels == [prediction.id]
    assert fake.predictions[prediction.id].status == "canceled"


async def test_a_running_job_past_its_deadline_fails_and_its_prediction_is_canceled(
    fake: FakeReplicate, settings_factory: Any
) -> None:
    fake.script = Script(advance_on_get=False)  # the prediction never ends by itself
    settings = settings_factory(
        replicate_api_token=fake.token,
        replicate_base_url=fake.url,
        replicate_poll_interval=0.01,
        replicate_poll_max_interval=0.05,
    )
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=True) as server:
        deadline = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        payload = await server.generate(provider="replicate", deadline=deadline)
        job_id = payload["job"]["id"]
        async with graphql_ws(server.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": job_id})
            statuses = []
            while (update := await ws.next_payload(op)) is not None:
                job = update["data"]["jobUpdated"]
                statuses.append(job["status"])
        await asyncio.wait_for(fake.canceled.wait(), timeout=10)
    assert "RUNNING" in statuses and statuses[-1] == "FAILED"
    assert job["error"] == {
        "code": "DEADLINE_EXCEEDED",
        "message": "the job's deadline passed while it ran",
        "retryable": False,
    }
    [prediction] = fake.predictions.values()
    assert fake.cancels == [prediction.id] and prediction.status == "canceled"
