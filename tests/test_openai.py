"""The openai provider against a fake OpenAI images API over real sockets, and through the
service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gql_media.adapters import redis as redis_adapter
from gql_media.adapters.providers.openai import OpenAIProvider, generations_url
from gql_media.domain import GenerateImageRequest
from gql_media.errors import (
    ErrorCode,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from tests import fakes
from tests.fakes import RecordingContext, pixels
from tests.fakes.openai_server import FakeOpenAI, running_openai
from tests.support import JOB_FIELDS, graphql_ws, start_server

FOLLOW = f"subscription Follow($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"


def image_request(**fields: Any) -> GenerateImageRequest:
    return fakes.image_request(**{"height": 192, **fields})


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_openai() as server:
        yield server


@pytest.fixture
async def make_provider(fake: FakeOpenAI) -> AsyncIterator[Callable[..., OpenAIProvider]]:
    made: list[OpenAIProvider] = []

    def make(**options: Any) -> OpenAIProvider:
        values: dict[str, Any] = {"base_url": fake.url, "api_key": fake.api_key}
        values.update(options)
        provider = OpenAIProvider(**values)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


async def failure_of(provider: OpenAIProvider, **fields: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(image_request(**fields), RecordingContext())
    return caught.value


async def test_generates_from_b64_json(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    provider = make_provider()
    images = await provider.generate(
        image_request(num_outputs=2, extra={"quality": "low", "n": 9}), RecordingContext()
    )

    [body] = fake.requests
    assert body == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse at dusk",
        "n": 2,  # extra adds options; it never replaces what the fields set
        "size": "256x192",
        "quality": "low",
    }
    assert fake.headers[0]["authorization"] == f"Bearer {fake.api_key}"
    assert [image.data for image in images] == fake.images
    assert [(i.content_type, i.width, i.height) for i in images] == [("image/png", 256, 192)] * 2


async def test_generates_from_urls_when_asked_to(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    provider = make_provider(response_format="url", model="dall-e-2")
    [image] = await provider.generate(image_request(model=None), RecordingContext())
    assert fake.requests[0]["response_format"] == "url"
    assert fake.requests[0]["model"] == "dall-e-2"
    assert image.data == fake.images[0] and len(fake.files) == 1


async def test_url_answers_are_accepted_without_asking(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    fake.answer_with_urls = True
    [image] = await make_provider().generate(image_request(), RecordingContext())
    assert "response_format" not in fake.requests[0]
    assert image.data == fake.images[0]


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_the_base_url_may_end_in_v1(suffix: str) -> None:
    url = generations_url("http://example.test" + suffix)
    assert url == "http://example.test/v1/images/generations"


async def test_a_base_url_ending_in_v1_reaches_the_server(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    await make_provider(base_url=fake.url + "/v1").generate(image_request(), RecordingContext())
    assert len(fake.requests) == 1


def test_validation_reports_a_missing_base_url_and_a_negative_prompt() -> None:
    [error] = OpenAIProvider(base_url=None).validate(image_request())
    assert (error.code, error.field) == (ErrorCode.PROVIDER_NOT_CONFIGURED, "provider")
    provider = OpenAIProvider(base_url="http://example.test")
    assert provider.validate(image_request()) == []
    [error] = provider.validate(image_request(negative_prompt="fog"))
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "negativePrompt")


async def test_generate_without_a_base_url_is_not_configured() -> None:
    error = await failure_of(OpenAIProvider(base_url=None))
    assert error.code is ErrorCode.PROVIDER_NOT_CONFIGURED


async def test_a_bad_key_is_provider_auth_failed(
    make_provider: Callable[..., OpenAIProvider],
) -> None:
    error = await failure_of(make_provider(api_key="sk-wrong"))
    assert isinstance(error, PermanentProviderError)
    assert error.code is ErrorCode.PROVIDER_AUTH_FAILED
    assert "the provider refused the API token" in error.message


async def test_a_400_is_rejected_with_openais_message(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    message = "Your request was rejected as a result of our safety system."
    fake.fail(400, {"error": {"message": message, "type": "image_generation_user_error"}})
    error = await failure_of(make_provider())
    assert error.code is ErrorCode.PROVIDER_REJECTED and message in error.message


async def test_a_429_is_transient_with_retry_after(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    fake.fail(429, {"error": {"message": "Rate limit reached"}}, Retry_After="20")
    error = await failure_of(make_provider())
    assert isinstance(error, TransientProviderError) and error.retry_after == 20


async def test_a_5xx_is_transient(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    fake.fail(502, "Bad Gateway")
    error = await failure_of(make_provider())
    assert isinstance(error, TransientProviderError)
    assert error.code is ErrorCode.PROVIDER_UNAVAILABLE


async def test_an_answer_without_images_is_bad_output(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    fake.fail(200, {"created": 1, "data": [{"revised_prompt": "no image here"}]})
    error = await failure_of(make_provider())
    assert error.code is ErrorCode.PROVIDER_BAD_OUTPUT


async def test_oversized_images_are_refused(
    fake: FakeOpenAI, make_provider: Callable[..., OpenAIProvider]
) -> None:
    for provider in (
        make_provider(max_download_bytes=200),
        make_provider(max_download_bytes=200, response_format="url"),
    ):
        error = await failure_of(provider)
        assert error.code is ErrorCode.PROVIDER_BAD_OUTPUT


async def test_generate_image_with_openai_end_to_end(
    fake: FakeOpenAI, settings_factory: Any
) -> None:
    settings = settings_factory(
        openai_base_url=fake.url + "/v1/", openai_api_key=fake.api_key, openai_model="gpt-image-1"
    )
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=True) as server:
        payload = await server.generate(
            prompt="a red fox in snow", provider="openai", width=256, height=128
        )
        assert payload["userErrors"] == []
        async with graphql_ws(server.ws_url) as ws:
            op = await ws.subscribe(FOLLOW, {"id": payload["job"]["id"]})
            final = [p["data"]["jobUpdated"] for p in await ws.collect(op)][-1]
        assert final["status"] == "SUCCEEDED", final
        [output] = final["outputs"]
        media = await server.http.get(output["url"])

    [made] = fake.images
    assert fake.requests[0]["size"] == "256x128"
    assert media.status_code == 200 and media.content == made
    assert pixels(media.content) == pixels(made)
    assert (output["contentType"], output["width"], output["height"]) == ("image/png", 256, 128)


async def test_openai_without_a_base_url_is_a_user_error(settings_factory: Any) -> None:
    settings = settings_factory(openai_base_url=None)
    fake_redis = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake_redis, with_worker=False) as server:
        payload = await server.generate(provider="openai")
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        ("provider", "PROVIDER_NOT_CONFIGURED")
    ]
