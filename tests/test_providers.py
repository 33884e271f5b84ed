"""The provider registry through the api: what each provider offers, and per-model limits
checked before anything is queued."""

from __future__ import annotations

from typing import Any

from gql_media.adapters import redis as redis_adapter
from tests.support import LiveServer, start_server

PROVIDERS = """{ providers { name configured defaultModel isDefault
  models { name description maxOutputs sizes } } }"""


async def test_providers_lists_each_with_its_models(server: LiveServer) -> None:
    body = await server.graphql(PROVIDERS)
    providers = {p["name"]: p for p in body["data"]["providers"]}
    assert set(providers) == {"local", "mock", "openai", "replicate"}
    assert providers["local"]["configured"] and providers["local"]["isDefault"]
    assert not providers["replicate"]["configured"] and not providers["openai"]["configured"]
    assert providers["replicate"]["defaultModel"] == "black-forest-labs/flux-schnell"
    dalle3 = next(m for m in providers["openai"]["models"] if m["name"] == "dall-e-3")
    assert dalle3["maxOutputs"] == 1 and "1792x1024" in dalle3["sizes"]


async def test_model_limits_are_user_errors_before_queueing(settings_factory: Any) -> None:
    settings = settings_factory(
        replicate_api_token="r8_unused",
        openai_base_url="https://api.openai.com",
        default_provider="mock",
    )
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        providers = {p["name"]: p for p in (await live.graphql(PROVIDERS))["data"]["providers"]}
        assert providers["replicate"]["configured"] and providers["mock"]["isDefault"]

        pro = await live.generate(
            provider="replicate", model="black-forest-labs/flux-1.1-pro", numOutputs=2
        )
        assert [(e["field"], e["code"]) for e in pro["userErrors"]] == [
            ("numOutputs", "NUM_OUTPUTS_OUT_OF_RANGE")
        ]
        dalle = await live.generate(provider="openai", model="dall-e-3", width=512, height=512)
        assert [(e["field"], e["code"]) for e in dalle["userErrors"]] == [
            ("width", "SIZE_OUT_OF_RANGE")
        ]
        fine = await live.generate(provider="openai", model="dall-e-3", width=1024, height=1024)
        assert fine["userErrors"] == [] and fine["job"]["status"] == "QUEUED"
        unknown_model = await live.generate(provider="replicate", model="someone/new-model")
        assert unknown_model["userErrors"] == []  # not listed: the provider decides
        total = await live.graphql("{ jobs { totalCount } }")
        assert total["data"]["jobs"]["totalCount"] == 2
