"""Replicate's HTTP contract as the ``replicate`` provider uses it: model references, the
prediction ``input`` a request makes, progress from a prediction's logs, webhook bodies and
output URLs. Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from gql_media.adapters.providers import catalogue
from gql_media.domain import GenerateImageRequest, OutputFormat
from gql_media.errors import ErrorCode, PermanentProviderError

NAME = "replicate"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
WEBHOOK_PATH = "/webhooks/replicate"
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
OUTPUT_FORMATS = {OutputFormat.PNG: "png", OutputFormat.JPEG: "jpg", OutputFormat.WEBP: "webp"}
_VERSION = re.compile(r"[0-9a-f]{64}")
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PERCENT = re.compile(r"(\d{1,3})%\s*\|")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model by name (``owner/name``), a version (64 hex digits), or both."""

    owner: str | None
    name: str | None
    version: str | None

    @property
    def flux_style(self) -> bool:
        """Black Forest Labs' FLUX models take ``aspect_ratio`` rather than a pixel size."""
        return self.owner == "black-forest-labs" or "flux" in (self.name or "").lower()


def parse_model(text: str) -> ModelRef:
    """``owner/name``, ``owner/name:version`` or ``version``; ValueError for anything else."""
    text = text.strip()
    if _VERSION.fullmatch(text):
        return ModelRef(None, None, text)
    slug, colon, version = text.partition(":")
    owner, slash, name = slug.partition("/")
    if not (slash and _SLUG.fullmatch(owner) and _SLUG.fullmatch(name)):
        raise ValueError(f"{text!r} is not owner/name, owner/name:version or a version id")
    if colon and not _VERSION.fullmatch(version):
        raise ValueError(f"{version!r} is not a version id (64 hexadecimal digits)")
    return ModelRef(owner, name, version or None)


def nearest_aspect_ratio(width: int, height: int) -> str:
    """The aspect ratio of ``ASPECT_RATIOS`` closest to ``width:height``."""

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(width / height) - math.log(int(w) / int(h)))

    return min(ASPECT_RATIOS, key=distance)


def build_input(request: GenerateImageRequest, model: ModelRef) -> dict[str, Any]:
    """The prediction ``input`` for ``request``; ``request.extra`` adds the keys it does not
    set itself (see ``catalogue.with_extra``)."""
    return catalogue.with_extra(own_input(request, model), request.extra)


def own_input(request: GenerateImageRequest, model: ModelRef) -> dict[str, Any]:
    """The prediction ``input`` that the fields of ``request`` make, without ``extra``."""
    data: dict[str, Any] = {
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "num_outputs": request.num_outputs,
        "seed": request.seed,
        "output_format": OUTPUT_FORMATS[request.output_format],
    }
    if request.negative_prompt:
        data["negative_prompt"] = request.negative_prompt
    if model.flux_style:
        data["aspect_ratio"] = nearest_aspect_ratio(request.width, request.height)
    return data


def progress_from_logs(logs: object) -> float | None:
    """The last tqdm percentage in a prediction's logs, as 0..1; None when there is none."""
    if not isinstance(logs, str):
        return None
    found = _PERCENT.findall(logs)
    if not found:
        return None
    return min(int(found[-1]), 100) / 100


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """What a webhook delivery says: which prediction changed, and its status now."""

    prediction_id: str
    status: str


def parse_webhook(body: bytes | str) -> WebhookEvent:
    """Read a verified webhook body (a prediction as JSON); ValueError when it is not one."""
    try:
        prediction = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError("the webhook body is not JSON") from exc
    if not isinstance(prediction, dict):
        raise ValueError("the webhook body is not a prediction")
    prediction_id, status = prediction.get("id"), prediction.get("status")
    if not isinstance(prediction_id, str) or not prediction_id or not isinstance(status, str):
        raise ValueError("the webhook body has no prediction id or status")
    return WebhookEvent(prediction_id, status)


def output_urls(output: object) -> list[str]:
    """The file URLs of a succeeded prediction's ``output`` (one URL or a list of them)."""
    items = output if isinstance(output, list) else [output]
    if not items or not all(isinstance(item, str) and item for item in items):
        raise PermanentProviderError(
            f"the replicate prediction succeeded without image URLs: {str(output)[:200]}",
            code=ErrorCode.PROVIDER_BAD_OUTPUT,
        )
    return [str(item) for item in items]


def data_url_bytes(url: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:<type>;base64,...`` output, refused above ``max_bytes``."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise PermanentProviderError(
            "the replicate output is a malformed data URL", code=ErrorCode.PROVIDER_BAD_OUTPUT
        )
    if len(payload) > (max_bytes + 2) // 3 * 4:
        raise PermanentProviderError(
            f"the replicate output is larger than {max_bytes} bytes",
            code=ErrorCode.PROVIDER_BAD_OUTPUT,
        )
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise PermanentProviderError(
            "the replicate output is not valid base64", code=ErrorCode.PROVIDER_BAD_OUTPUT
        ) from exc
