"""Which providers this process can run, built from settings."""

from __future__ import annotations

from gql_media.adapters.providers import ImageProvider
from gql_media.adapters.providers.local import LocalProvider
from gql_media.adapters.providers.mock import MockProvider
from gql_media.adapters.providers.openai import OpenAIProvider
from gql_media.adapters.providers.replicate import ReplicateProvider
from gql_media.settings import Settings


def build_providers(settings: Settings) -> dict[str, ImageProvider]:
    return {
        "local": LocalProvider(steps=settings.local_steps, step_delay=settings.local_step_delay),
        "mock": MockProvider(
            delay_ms=settings.mock_delay_ms,
            steps=settings.mock_steps,
            failure_rate=settings.mock_failure_rate,
        ),
        # always known, so a request for an unconfigured one gets PROVIDER_NOT_CONFIGURED
        "replicate": ReplicateProvider.from_settings(settings),
        "openai": OpenAIProvider.from_settings(settings),
    }
