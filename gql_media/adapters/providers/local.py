"""The built-in offline provider: real pictures from prompt, seed and size, painted in steps."""

from __future__ import annotations

import asyncio

from gql_media.adapters import imaging
from gql_media.adapters.providers import ProviderContext, catalogue
from gql_media.domain import GeneratedImage, GenerateImageRequest, ProviderInfo
from gql_media.errors import UserError


class LocalProvider:
    """Paints abstract pictures with Pillow, off the event loop, reporting each step."""

    name = "local"

    def __init__(self, steps: int = 8, step_delay: float = 0.0) -> None:
        self._steps = max(steps, 2)
        self._step_delay = step_delay

    def describe(self) -> ProviderInfo:
        return catalogue.describe(self.name, True, "painting", catalogue.LOCAL_MODELS)

    def validate(self, request: GenerateImageRequest) -> list[UserError]:
        return []

    async def generate(
        self, request: GenerateImageRequest, context: ProviderContext
    ) -> list[GeneratedImage]:
        paintings = [
            imaging.Painting(
                request.prompt, request.seed + index, request.width, request.height, self._steps
            )
            for index in range(request.num_outputs)
        ]
        total = self._steps * len(paintings) + 1
        done = 0
        await context.progress(0.0)
        for painting in paintings:
            for step in range(self._steps):
                await asyncio.to_thread(painting.paint_step, step)
                done += 1
                await context.progress(done / total)
                if self._step_delay:
                    await asyncio.sleep(self._step_delay)
        outputs = []
        for painting in paintings:
            data = await asyncio.to_thread(imaging.encode, painting.image, request.output_format)
            outputs.append(
                GeneratedImage(
                    data=data,
                    content_type=request.output_format.content_type,
                    width=painting.width,
                    height=painting.height,
                )
            )
        return outputs
