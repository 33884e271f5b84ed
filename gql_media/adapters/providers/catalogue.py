"""What the providers offer: their models, with the limits checked before a job is queued.

Remote providers accept any model their API knows; the models listed here are the common
ones whose limits are known, so requests over those limits get a userError at once rather
than a failed job later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gql_media.domain import GenerateImageRequest, ModelInfo, ProviderInfo
from gql_media.errors import ErrorCode, UserError

LOCAL_MODELS = (ModelInfo("painting", "deterministic abstract paintings, offline", 4),)
MOCK_MODELS = (ModelInfo("mock", "scripted delays, progress and failures", 4),)
REPLICATE_MODELS = (
    ModelInfo("black-forest-labs/flux-schnell", "FLUX.1 [schnell]: fast, 4 steps", 4),
    ModelInfo("black-forest-labs/flux-dev", "FLUX.1 [dev]: higher quality, slower", 4),
    ModelInfo("black-forest-labs/flux-1.1-pro", "FLUX1.1 [pro]", 1),
    ModelInfo("stability-ai/stable-diffusion-3.5-large", "Stable Diffusion 3.5 Large", 1),
)
OPENAI_MODELS = (
    ModelInfo("gpt-image-1", "OpenAI GPT Image 1", 10, ("1024x1024", "1536x1024", "1024x1536")),
    ModelInfo("dall-e-3", "OpenAI DALL·E 3", 1, ("1024x1024", "1792x1024", "1024x1792")),
    ModelInfo("dall-e-2", "OpenAI DALL·E 2", 10, ("256x256", "512x512", "1024x1024")),
)


def describe(
    name: str, configured: bool, default_model: str, models: Sequence[ModelInfo]
) -> ProviderInfo:
    return ProviderInfo(name, configured, default_model, tuple(models))


def check_model_limits(
    request: GenerateImageRequest, model: str, models: Sequence[ModelInfo]
) -> list[UserError]:
    """The problems of ``request`` for ``model``, when the model is a listed one."""
    info = next((m for m in models if m.name == model), None)
    if info is None:
        return []
    errors = []
    if request.num_outputs > info.max_outputs:
        errors.append(
            UserError(
                ErrorCode.NUM_OUTPUTS_OUT_OF_RANGE,
                f"{model} makes at most {info.max_outputs} image(s) per request",
                "numOutputs",
            )
        )
    size = f"{request.width}x{request.height}"
    if info.sizes and size not in info.sizes:
        errors.append(
            UserError(
                ErrorCode.SIZE_OUT_OF_RANGE,
                f"{model} makes only these sizes: {', '.join(info.sizes)}",
                "width",
            )
        )
    return errors


def with_extra(own: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A provider's request ``own`` with the keys of ``extra`` it does not set itself: the
    options ``extra`` passes through never replace what the checked fields set (size, count,
    model...), which the limits above were checked on."""
    return {**extra, **own}


def extra_overrides(extra: dict[str, Any], own: Iterable[str]) -> list[UserError]:
    """A userError for each key of ``extra`` that names one of the keys ``own`` a provider
    sets from the request's fields."""
    return [
        UserError(
            ErrorCode.INVALID_ARGUMENT,
            f"extra.{key} is set from the request's own fields; use those instead",
            f"extra.{key}",
        )
        for key in sorted(set(extra).intersection(own))
    ]
