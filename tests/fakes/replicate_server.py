"""A fake Replicate API: predictions that advance as they are polled, per a test's script.

It speaks the documented HTTP contract: ``POST /v1/models/{owner}/{name}/predictions`` and
``POST /v1/predictions`` (with ``version``) create, ``GET /v1/predictions/{id}`` reads,
``POST /v1/predictions/{id}/cancel`` cancels; ``Prefer: wait=N`` may return a finished
prediction; bearer tokens are checked (401); webhooks are signed like Replicate's. Output
files are real images served by the fake itself under ``/files/``.

A prediction goes starting → processing (one poll per ``percents`` entry, each adding a
tqdm line to ``logs``) → the script's outcome. With ``advance_on_get=False`` it moves only
when the test calls ``advance``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import Fault, Faults, picture, serving

TERMINAL = ("succeeded", "failed", "canceled", "aborted")
EXTENSIONS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


@dataclass
class Script:
    """How the fake runs the predictions created after it is set."""

    percents: tuple[int, ...] = (0, 40, 80, 100)
    outcome: str = "succeeded"  # or failed, canceled, aborted
    error: str = "CUDA out of memory"
    finish_within_wait: bool = False  # a Prefer: wait create returns it finished
    advance_on_get: bool = True
    single_output: bool = False  # ``output`` as one URL rather than a list
    data_urls: bool = False  # outputs inline as ``data:`` URLs rather than file URLs
    file_type: str | None = None  # declared Content-Type of outputs (default: the real one)
    file_body: bytes | None = None  # served instead of the picture
    file_base: str | None = None  # output URLs on this server rather than the fake itself


@dataclass
class Prediction:
    id: str
    model: str
    version: str | None
    input: dict[str, Any]
    script: Script
    webhook: str | None = None
    events: tuple[str, ...] = ()
    step: int = 0
    status: str = "starting"
    logs: str = ""
    output: Any = None
    error: str | None = None

    def steps(self) -> list[str]:
        return ["starting", *("processing" for _ in self.script.percents), self.script.outcome]


@dataclass
class CreateCall:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeReplicate:
    token: str = "r8_fake_token"
    webhook_secret: str = "whsec_" + base64.b64encode(b"fake replicate webhook key").decode()
    script: Script = field(default_factory=Script)
    url: str = ""
    creates: list[CreateCall] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    # (prediction id, "event:receiver's status code")
    webhooks_sent: list[tuple[str, str]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    created: asyncio.Event = field(default_factory=asyncio.Event)
    canceled: asyncio.Event = field(default_factory=asyncio.Event)
    polled: asyncio.Event = field(default_factory=asyncio.Event)
    _seeds: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def fail(
        self, route: str, status: int, body: Any = None, times: int = 1, **headers: str
    ) -> None:
        """Answer the next ``times`` calls of ``route`` (create, get, cancel, file) with
        ``status``; header names use underscores for dashes (``Retry_After``)."""
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        self.faults.add(route, Fault(status, body, named), times)

    def hang(self, route: str) -> None:
        """Never answer the next call of ``route``."""
        self.faults.add(route, Fault(504, hang=True))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models/{owner}/{name}/predictions", self._create, methods=["POST"]),
                Route("/v1/predictions", self._create, methods=["POST"]),
                Route("/v1/predictions/{id}", self._get, methods=["GET"]),
                Route("/v1/predictions/{id}/cancel", self._cancel, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    def add_prediction(self, model: str = "black-forest-labs/flux-schnell") -> Prediction:
        """A prediction made earlier (outside this test's provider calls), still starting."""
        prediction = Prediction(f"p{uuid.uuid4().hex[:20]}", model, None, {}, self.script)
        self.predictions[prediction.id] = prediction
        return prediction

    async def advance(self, prediction_id: str, *, to_end: bool = False) -> Prediction:
        """Move a prediction one step on (or to its outcome), sending its webhooks."""
        prediction = self.predictions[prediction_id]
        while prediction.status not in TERMINAL:
            await self._step(prediction)
            if not to_end:
                break
        return prediction

    async def wait_for_prediction(self) -> Prediction:
        await self.created.wait()
        return list(self.predictions.values())[-1]

    # handlers

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    @staticmethod
    def _unauthenticated() -> Response:
        detail = "You did not pass a valid authentication token"
        return JSONResponse(
            {"title": "Unauthenticated", "detail": detail, "status": 401}, status_code=401
        )

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthenticated()
        if (fault := await self.faults.take("create")) is not None:
            return fault
        body = orjson.loads(await request.body())
        self.creates.append(CreateCall(request.url.path, body, dict(request.headers)))
        owner, name = request.path_params.get("owner"), request.path_params.get("name")
        model = f"{owner}/{name}" if owner else "some/model"
        if not isinstance(body.get("input"), dict) or not body["input"].get("prompt"):
            return JSONResponse(
                {"title": "Input validation failed", "detail": "input.prompt is required"},
                status_code=422,
            )
        prediction = Prediction(
            id=f"p{uuid.uuid4().hex[:20]}",
            model=model,
            version=body.get("version"),
            input=body["input"],
            script=self.script,
            webhook=body.get("webhook"),
            events=tuple(body.get("webhook_events_filter") or ()),
        )
        self.predictions[prediction.id] = prediction
        self.created.set()
        await self._webhook(prediction, "start")
        if self.script.finish_within_wait and "wait" in request.headers.get("prefer", ""):
            await self.advance(prediction.id, to_end=True)
        return JSONResponse(self._json(prediction), status_code=201)

    async def _get(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthenticated()
        prediction_id = request.path_params["id"]
        self.gets.append(prediction_id)
        self.polled.set()
        if (fault := await self.faults.take("get")) is not None:
            return fault
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            return JSONResponse({"detail": "Not found."}, status_code=404)
        if prediction.script.advance_on_get:
            await self.advance(prediction.id)
        return JSONResponse(self._json(prediction))

    async def _cancel(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthenticated()
        prediction_id = request.path_params["id"]
        self.cancels.append(prediction_id)
        self.canceled.set()
        if (fault := await self.faults.take("cancel")) is not None:
            return fault
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            return JSONResponse({"detail": "Not found."}, status_code=404)
        if prediction.status not in TERMINAL:
            prediction.status = "canceled"
            await self._webhook(prediction, "completed")
        return JSONResponse(self._json(prediction))

    async def _file(self, request: Request) -> Response:
        if (fault := await self.faults.take("file")) is not None:
            return fault
        found = self.files.get(request.path_params["name"])
        if found is None:
            return Response(status_code=404)
        content_type, data = found
        return Response(data, media_type=content_type)

    # the prediction's life

    async def _step(self, prediction: Prediction) -> None:
        prediction.step += 1
        prediction.status = prediction.steps()[prediction.step]
        event = "logs"
        if prediction.status == "processing":
            if prediction.step == 1:
                prediction.logs += f"Using seed: {prediction.input.get('seed')}\n"
            percent = prediction.script.percents[prediction.step - 1]
            bar = "█" * (percent // 10)
            done = round(percent * 4 / 100)
            prediction.logs += f"{percent:3d}%|{bar:<10}| {done}/4 [00:01<00:01, 2.00it/s]\n"
        elif prediction.status == "succeeded":
            prediction.output = self._outputs(prediction)
            event = "completed"
        elif prediction.status in TERMINAL:
            if prediction.status == "failed":
                prediction.error = prediction.script.error
            event = "completed"
        await self._webhook(prediction, event)

    def _outputs(self, prediction: Prediction) -> str | list[str]:
        extension = str(prediction.input.get("output_format", "webp"))
        width = int(prediction.input.get("width", 256))
        height = int(prediction.input.get("height", 256))
        urls = []
        for index in range(int(prediction.input.get("num_outputs", 1))):
            name = f"{prediction.id}-{index}.{extension}"
            data = picture(width, height, next(self._seeds), EXTENSIONS.get(extension, "WEBP"))
            real_type = "image/" + {"jpg": "jpeg"}.get(extension, extension)
            self.files[name] = (
                prediction.script.file_type or real_type,
                prediction.script.file_body if prediction.script.file_body is not None else data,
            )
            if prediction.script.data_urls:
                urls.append(f"data:{real_type};base64,{base64.b64encode(data).decode()}")
            else:
                urls.append(f"{prediction.script.file_base or self.url}/files/{name}")
        return urls[0] if prediction.script.single_output else urls

    def _json(self, prediction: Prediction) -> dict[str, Any]:
        return {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.version or "0" * 64,
            "input": prediction.input,
            "logs": prediction.logs,
            "output": prediction.output,
            "error": prediction.error,
            "status": prediction.status,
            "created_at": "2025-01-01T00:00:00.000Z",
            "urls": {
                "get": f"{self.url}/v1/predictions/{prediction.id}",
                "cancel": f"{self.url}/v1/predictions/{prediction.id}/cancel",
            },
        }

    async def _webhook(self, prediction: Prediction, event: str) -> None:
        """POST the prediction to its webhook, signed with ``webhook_secret``."""
        if prediction.webhook is None or (prediction.events and event not in prediction.events):
            return
        body = orjson.dumps(self._json(prediction))
        webhook_id = f"msg_{uuid.uuid4().hex}"
        timestamp = str(int(time.time()))
        key = base64.b64decode(self.webhook_secret.removeprefix("whsec_"))
        signed = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(signed.digest()).decode(),
        }
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.post(prediction.webhook, content=body, headers=headers)
        self.webhooks_sent.append((prediction.id, f"{event}:{response.status_code}"))


@asynccontextmanager
async def running_replicate(**options: Any) -> AsyncIterator[FakeReplicate]:
    """A FakeReplicate listening on a free port of 127.0.0.1."""
    fake = FakeReplicate(**options)
    async with serving(fake.app()) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.faults.released.set()  # let hanging requests end so the server can stop
