"""Image providers: each turns a GenerateImageRequest into encoded images."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from gql_media.domain import GeneratedImage, GenerateImageRequest

ProgressCallback = Callable[[float], Awaitable[None]]


class ImageProvider(Protocol):
    """What the job runner needs of a provider."""

    name: str

    async def generate(
        self, request: GenerateImageRequest, progress: ProgressCallback
    ) -> list[GeneratedImage]:
        """Make ``request.num_outputs`` images, calling ``progress`` with fractions 0..1.

        Raises TransientProviderError for failures worth retrying and
        PermanentProviderError for the rest.
        """
        ...
