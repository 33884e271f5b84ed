"""What the GraphQL over HTTP spec asks of a response beyond its body.

- ``application/graphql-response+json`` answers a client whose Accept prefers it (listed
  with a weight at least that of ``application/json``); then a request that fails before
  execution (a document that does not parse or validate, variables that do not coerce) is
  answered 4xx with no ``data`` entry. ``application/json`` stays the default, always 200
  for a request that reached execution or failed before it.
- A mutation sent with GET is answered 405 with ``Allow: POST``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from strawberry.http.parse_content_type import parse_content_type

from gql_media.api.patches.strawberry_operations import refused_type
from gql_media.errors import ErrorCode

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
# the status of a request error, by the code of its worst error (any other: 400)
STATUS_BY_CODE = {
    ErrorCode.INTERNAL_ERROR.value: 500,
    ErrorCode.SERVICE_UNAVAILABLE.value: 503,
    ErrorCode.UNAUTHENTICATED.value: 401,
}


def prefers_graphql_response(accept: str) -> bool:
    """Whether ``accept`` names application/graphql-response+json with a weight at least
    that of application/json (which wildcards match too); parsed only when it names the
    former (every request asks)."""
    if GRAPHQL_RESPONSE not in accept.lower():
        return False
    best = {GRAPHQL_RESPONSE: 0.0, JSON: 0.0}
    for part in accept.split(","):
        media_type, params = parse_content_type(part)
        weight = q_weight(params)
        if media_type == GRAPHQL_RESPONSE:
            best[GRAPHQL_RESPONSE] = max(best[GRAPHQL_RESPONSE], weight)
        elif media_type in (JSON, "application/*", "*/*"):
            best[JSON] = max(best[JSON], weight)
    return best[GRAPHQL_RESPONSE] > 0 and best[GRAPHQL_RESPONSE] >= best[JSON]


def q_weight(params: Mapping[str, str]) -> float:
    """The ``q`` of a media range; 0 for one that is malformed or out of range."""
    try:
        weight = float(params.get("q", "1"))
    except ValueError:
        return 0.0
    return weight if 0 <= weight <= 1 else 0.0


def is_request_error(data: Any, errors: Sequence[Any] | None) -> bool:
    """A result of a request that failed before execution: no data, and errors that no
    field raised (parse, validation and variable errors carry no path)."""
    return data is None and bool(errors) and all(error.path is None for error in errors or ())


def mark_request_error(request: Request, processed: dict[str, Any]) -> None:
    """Take the ``data`` entry out of a request error's response for a client that prefers
    application/graphql-response+json, and remember its status for ``finish``."""
    if not prefers_graphql_response(request.headers.get("accept", "")):
        return
    processed.pop("data", None)
    codes = [(error.get("extensions") or {}).get("code") for error in processed["errors"]]
    statuses = [STATUS_BY_CODE.get(str(code), 400) for code in codes]
    request.state.request_error_status = max(statuses, default=400)


def finish(request: Request, response: Response) -> Response:
    """``response`` in the media type the client prefers, with a request error's status."""
    if response.headers.get("content-type", "").split(";")[0].strip() != JSON:
        return response  # a stream, GraphiQL's page
    if prefers_graphql_response(request.headers.get("accept", "")):
        response.headers["content-type"] = f"{GRAPHQL_RESPONSE}; charset=utf-8"
        status = getattr(request.state, "request_error_status", None)
        if status is not None:
            response.status_code = status
    return response


def refused_status(method: str, cause: BaseException | None) -> tuple[int, dict[str, str]]:
    """The status and headers of strawberry's refusal of a request: 405 with ``Allow:
    POST`` for a mutation over GET, else 400."""
    if method == "GET" and refused_type(cause) == "mutation":
        return 405, {"Allow": "POST"}
    return 400, {}
