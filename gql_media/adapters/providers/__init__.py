"""Image providers: each turns a GenerateImageRequest into encoded images."""

from __future__ import annotations

from typing import Protocol

from gql_media.domain import GeneratedImage, GenerateImageRequest, ProviderInfo
from gql_media.errors import UserError


class ProviderContext(Protocol):
    """What a running job offers its provider."""

    @property
    def attempt(self) -> int:
        """1 for the first attempt of the job, 2 for its first retry, and so on."""
        ...

    @property
    def external_id(self) -> str | None:
        """The provider-side id saved by an earlier run of this job (resume, don't repay)."""
        ...

    async def progress(self, fraction: float) -> None:
        """Report progress 0..1; raises JobCanceled once the job was canceled."""
        ...

    async def save_external_id(self, external_id: str) -> None:
        """Store the provider-side id on the job before waiting on it."""
        ...

    async def ensure_running(self) -> None:
        """Raise JobCanceled if the job was canceled; call it while waiting on slow work."""
        ...


class ImageProvider(Protocol):
    """What the job runner needs of a provider.

    Optional hooks, looked up with ``getattr`` because not every provider has them:

    - ``async def cancel(self, external_id: str) -> None``: stop the provider-side work
      saved with ``save_external_id`` once its job was canceled; never raises.
    - ``def nudge(self, external_id: str) -> None``: the provider reported a change of that
      work (a webhook); stop waiting for the next poll and look now.
    - ``async def aclose(self) -> None``: release clients at process exit.
    """

    name: str

    def describe(self) -> ProviderInfo:
        """Whether the provider is configured, and its models with their limits."""
        ...

    def validate(self, request: GenerateImageRequest) -> list[UserError]:
        """Problems with ``request`` for this provider, found before anything is queued."""
        ...

    async def generate(
        self, request: GenerateImageRequest, context: ProviderContext
    ) -> list[GeneratedImage]:
        """Make ``request.num_outputs`` images.

        Raises TransientProviderError for failures worth retrying and
        PermanentProviderError for the rest.
        """
        ...
