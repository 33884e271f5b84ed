"""The ``mock`` provider for demos and tests: scripted delays, progress and failures.

Per job, through the ``extra`` input:

- ``delayMs``: total time the job takes (default from settings),
- ``steps``: progress steps (default from settings),
- ``fail``: ``transient`` | ``permanent`` | ``timeout`` (default: none),
- ``failAttempts``: how many attempts fail before one succeeds (default: all of them),
- ``failureRate``: chance (0..1) that an attempt fails transiently; deterministic for a seed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gql_media.adapters import imaging
from gql_media.adapters.providers import ProviderContext, catalogue
from gql_media.domain import GeneratedImage, GenerateImageRequest, ProviderInfo
from gql_media.errors import (
    ErrorCode,
    PermanentProviderError,
    TransientProviderError,
    UserError,
)

FAILURE_KINDS = ("transient", "permanent", "timeout")
INLINE_PIXELS = 128 * 128  # pictures this small are painted on the event loop


def _number(extra: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = extra.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise UserError(
            ErrorCode.INVALID_ARGUMENT,
            f"extra.{key} must be a number from {low:g} to {high:g}",
            f"extra.{key}",
        )
    return float(value)


class MockProvider:
    """Pretends to be a remote model; makes small real pictures."""

    name = "mock"

    def __init__(self, delay_ms: float = 0.0, steps: int = 4, failure_rate: float = 0.0) -> None:
        self._delay_ms = delay_ms
        self._steps = steps
        self._failure_rate = failure_rate

    def describe(self) -> ProviderInfo:
        return catalogue.describe(self.name, True, "mock", catalogue.MOCK_MODELS)

    def validate(self, request: GenerateImageRequest) -> list[UserError]:
        try:
            self._options(request.extra)
        except UserError as exc:
            return [exc]
        return []

    def _options(self, extra: dict[str, Any]) -> tuple[float, int, str | None, int, float]:
        delay = _number(extra, "delayMs", self._delay_ms, 0, 600_000) / 1000
        steps = int(_number(extra, "steps", self._steps, 1, 1000))
        fail = extra.get("fail")
        if fail is not None and fail not in FAILURE_KINDS:
            raise UserError(
                ErrorCode.INVALID_ARGUMENT,
                f"extra.fail must be one of {', '.join(FAILURE_KINDS)}",
                "extra.fail",
            )
        fail_attempts = int(_number(extra, "failAttempts", 1_000_000, 0, 1_000_000))
        rate = _number(extra, "failureRate", self._failure_rate, 0, 1)
        return delay, steps, fail, fail_attempts, rate

    async def generate(
        self, request: GenerateImageRequest, context: ProviderContext
    ) -> list[GeneratedImage]:
        delay, steps, fail, fail_attempts, rate = self._options(request.extra)
        await context.progress(0.0)
        for step in range(1, steps + 1):
            if delay:
                await asyncio.sleep(delay / steps)
            await context.progress(step / (steps + 1))
        if fail is not None and context.attempt <= fail_attempts:
            self._raise(fail, context.attempt)
        if rate and random.Random(f"{request.seed}:{context.attempt}").random() < rate:
            self._raise("transient", context.attempt)
        if request.width * request.height * request.num_outputs <= INLINE_PIXELS:
            return self._render(request)  # well under a millisecond: less than a thread hop
        return await asyncio.to_thread(self._render, request)

    @staticmethod
    def _raise(kind: str, attempt: int) -> None:
        if kind == "permanent":
            raise PermanentProviderError(f"mock permanent failure on attempt {attempt}")
        if kind == "timeout":
            raise TransientProviderError(
                f"mock timeout on attempt {attempt}", code=ErrorCode.PROVIDER_TIMEOUT
            )
        raise TransientProviderError(f"mock transient failure on attempt {attempt}")

    @staticmethod
    def _render(request: GenerateImageRequest) -> list[GeneratedImage]:
        outputs = []
        for index in range(request.num_outputs):
            painting = imaging.Painting(
                request.prompt, request.seed + index, request.width, request.height, steps=2
            )
            painting.paint_step(0)
            outputs.append(
                GeneratedImage(
                    data=imaging.encode(painting.image, request.output_format),
                    content_type=request.output_format.content_type,
                    width=request.width,
                    height=request.height,
                )
            )
        return outputs
