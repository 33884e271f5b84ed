"""A fake OpenAI images API: ``POST /v1/images/generations`` answering with real pictures.

Images come back as ``b64_json`` unless the request asks for ``response_format: "url"``
(or the test sets ``answer_with_urls``); URLs point at files the fake serves itself.
A bearer key is checked when the fake has one.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import Fault, Faults, picture, serving


@dataclass
class FakeOpenAI:
    api_key: str | None = "sk-fake"
    answer_with_urls: bool = False
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    images: list[bytes] = field(default_factory=list)  # every image made, in order
    faults: Faults = field(default_factory=Faults)
    _seeds: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def fail(self, status: int, body: Any = None, times: int = 1, **headers: str) -> None:
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        self.faults.add("generate", Fault(status, body, named), times)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._generate, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _generate(self, request: Request) -> Response:
        if self.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=401)
        if (fault := await self.faults.take("generate")) is not None:
            return fault
        body = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        width, _, height = str(body.get("size", "1024x1024")).partition("x")
        if not (width.isdigit() and height.isdigit()):
            error = {"message": f"Invalid size {body.get('size')!r}", "type": "invalid_value"}
            return JSONResponse({"error": error}, status_code=400)
        as_url = self.answer_with_urls or body.get("response_format") == "url"
        data = []
        for _ in range(int(body.get("n", 1))):
            image = picture(int(width), int(height), next(self._seeds))
            self.images.append(image)
            if as_url:
                name = f"img-{len(self.images)}.png"
                self.files[name] = image
                data.append({"url": f"{self.url}/files/{name}"})
            else:
                data.append({"b64_json": base64.b64encode(image).decode()})
        return JSONResponse({"created": 1735689600, "data": data})

    async def _file(self, request: Request) -> Response:
        data = self.files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")


@asynccontextmanager
async def running_openai(**options: Any) -> AsyncIterator[FakeOpenAI]:
    """A FakeOpenAI listening on a free port of 127.0.0.1."""
    fake = FakeOpenAI(**options)
    async with serving(fake.app()) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.faults.released.set()
