"""Local stand-ins for the remote providers: real HTTP servers that speak their contracts.

Each fake is a Starlette app served by uvicorn on 127.0.0.1 on a port the OS picks, on the
test's own event loop, so tests can both call it over real sockets and inspect its state.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from gql_media.domain import GenerateImageRequest, OutputFormat
from gql_media.errors import JobCanceled


@asynccontextmanager
async def serving(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host`` (any loopback address) until the block ends; yields its
    base URL. ``options`` go to uvicorn's Config (``ssl_certfile``... for HTTPS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # uvicorn offers no start-up event to await
            if task.done():
                task.result()
                raise RuntimeError("fake server exited during start-up")
            await asyncio.sleep(0.005)
        yield f"{'https' if options.get('ssl_certfile') else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def picture(width: int, height: int, seed: int, image_format: str = "PNG") -> bytes:
    """A small deterministic picture (random blocks of colour) encoded as ``image_format``."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    block = max(min(width, height) // 8, 1)
    for top in range(0, height, block):
        for left in range(0, width, block):
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            image.paste(colour, (left, top, left + block, top + block))
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()


def pixels(data: bytes) -> bytes:
    """The decoded RGB pixels of an encoded image, for comparing pictures across formats."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()


@dataclass
class Fault:
    """A scripted failure answered instead of the normal response."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the server stops): a timeout for the client

    def response(self) -> Response:
        if self.body is None:
            return Response(status_code=self.status, headers=self.headers)
        if isinstance(self.body, str):
            return Response(self.body, status_code=self.status, headers=self.headers)
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


class Faults:
    """Per-route queues of scripted failures; each one is used once."""

    def __init__(self) -> None:
        self._pending: dict[str, list[Fault]] = {}
        self.released = asyncio.Event()

    def add(self, route: str, fault: Fault, times: int = 1) -> None:
        self._pending.setdefault(route, []).extend([fault] * times)

    async def take(self, route: str) -> Response | None:
        queue = self._pending.get(route)
        if not queue:
            return None
        fault = queue.pop(0)
        if fault.hang:
            await self.released.wait()
        return fault.response()


class RecordingContext:
    """A ProviderContext that records what the provider reports and can cancel the job.

    ``cancel_at``: once a progress report reaches this fraction the job counts as canceled,
    so the next report or check raises JobCanceled, as the real runner's context does.
    """

    def __init__(
        self, external_id: str | None = None, attempt: int = 1, cancel_at: float | None = None
    ) -> None:
        self.attempt = attempt
        self.external_id = external_id
        self.cancel_at = cancel_at
        self.canceled = False
        self.progress_values: list[float] = []
        self.saved: list[str] = []
        self.checks = 0
        self.on_save: Callable[[str], None] | None = None

    def _raise_if_canceled(self) -> None:
        if self.canceled:
            raise JobCanceled("the job was canceled")

    async def progress(self, fraction: float) -> None:
        self._raise_if_canceled()
        self.progress_values.append(fraction)
        if self.cancel_at is not None and fraction >= self.cancel_at:
            self.canceled = True

    async def save_external_id(self, external_id: str) -> None:
        self._raise_if_canceled()
        if self.on_save is not None:
            self.on_save(external_id)
        self.saved.append(external_id)
        self.external_id = external_id

    async def ensure_running(self) -> None:
        self.checks += 1
        self._raise_if_canceled()


def image_request(**fields: Any) -> GenerateImageRequest:
    """A provider request for a 256x256 PNG of a lighthouse, with ``fields`` changed."""
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": None,
        "model": None,
        "width": 256,
        "height": 256,
        "num_outputs": 1,
        "seed": 42,
        "output_format": OutputFormat.PNG,
        "extra": {},
    }
    values.update(fields)
    return GenerateImageRequest(**values)


@dataclass
class StandInDNS:
    """Stands in for DNS, which is outside the project, at ``outbound.resolve``: ``name``
    resolves to each of ``answers`` in turn (the last one ever after, as a rebinding name
    does); other names do not resolve. ``lookups`` records every question."""

    name: str
    answers: list[list[str]]
    lookups: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[Any]:
        self.lookups.append((host, port))
        if host != self.name:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [ipaddress.ip_address(address) for address in answer]
