"""A small client of a gql_media api: GraphQL over HTTP, subscriptions over graphql-ws.

Used by the command line (``gql-media generate``, ``gql-media jobs``); usable from programs:

    async with Client("http://127.0.0.1:8000") as client:
        job = (await client.execute(GENERATE, {"input": {"prompt": "a fox"}}))["generateImage"]
        async for update in client.follow(job["job"]["id"]):
            print(update["status"], update["progress"])
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import connect

JOB_FIELDS = """
id kind status progress version prompt provider model attempts maxAttempts
error { code message retryable }
outputs { id url contentType width height byteSize sha256 name }
createdAt startedAt finishedAt
"""
GENERATE = f"""
mutation($input: GenerateImageInput!) {{
  generateImage(input: $input) {{ job {{ {JOB_FIELDS} }} userErrors {{ field code message }} }}
}}"""
FOLLOW = f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"
# what a job was asked (typed by its kind) and found out, for ``jobs show``
PARAMETER_FIELDS = """
parameters {
  __typename
  ... on GenerateImageParameters {
    negativePrompt width height numOutputs seed outputFormat extra
  }
  ... on ProcessImageParameters {
    mediaId
    variants {
      name format quality progressive stripMetadata
      operations {
        resize { width height fit upscale } thumbnail { size } crop { left top width height }
        rotate { degrees expand background } autoOrient
        textWatermark { text position margin opacity scale color }
        imageWatermark { mediaId position margin opacity scale }
      }
    }
  }
  ... on ProcessVideoParameters {
    mediaId
    operations {
      name videoThumbnail { at fraction maxSize format } videoMetadata
      transcode { targetHeight quality } extractAudio { codec bitrate }
    }
  }
}
"""
DETAIL_FIELDS = (
    PARAMETER_FIELDS
    + """
result {
  kind container duration width height fps videoCodec audioCodec bitrate rotation
  sampleRate channels
}
"""
)
GET_JOB = f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} {DETAIL_FIELDS} }} }}"
LIST_JOBS = f"""
query($filter: JobFilter, $first: Int, $after: String) {{
  jobs(filter: $filter, first: $first, after: $after) {{
    totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {JOB_FIELDS} }} }}
  }}
}}"""
PAYLOAD = f"job {{ {JOB_FIELDS} }} userErrors {{ field code message }}"
CANCEL = f"mutation($id: ID!) {{ cancelJob(id: $id) {{ {PAYLOAD} }} }}"
RETRY = f"mutation($id: ID!) {{ retryJob(id: $id) {{ {PAYLOAD} }} }}"
WATCH_TOKEN = """mutation($id: ID!, $ttl: Int, $cancel: Boolean!) {
  createWatchToken(jobId: $id, ttlSeconds: $ttl, allowCancel: $cancel) {
    token expiresAt userErrors { field code message } } }"""


class ClientError(Exception):
    """The api answered with errors (``code`` from ``extensions.code``) or not at all."""

    def __init__(self, message: str, code: str = "CONNECTION_FAILED") -> None:
        super().__init__(message)
        self.code = code


class Client:
    def __init__(self, url: str, key: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """The ``data`` of a query or mutation; ClientError on any top-level error."""
        try:
            response = await self._http.post(
                "/graphql", json={"query": query, "variables": variables or {}}
            )
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise ClientError(
                f"HTTP {response.status_code} from {self.url}", "BAD_RESPONSE"
            ) from exc
        _raise_errors(body)
        return body["data"]

    async def follow(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """The job now, then each change until it ends (``jobUpdated``)."""
        async for data in self.subscribe(FOLLOW, {"id": job_id}):
            yield data["jobUpdated"]

    async def subscribe(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> AsyncIterator[Any]:
        ws_url = "ws" + self.url.removeprefix("http") + "/graphql"
        payload = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        ids = itertools.count(1)
        try:
            async with connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
                await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
                ack = json.loads(await ws.recv())
                if ack.get("type") != "connection_ack":
                    raise ClientError(f"subscription refused: {ack}", "SUBSCRIPTION_REFUSED")
                op_id = str(next(ids))
                await ws.send(
                    json.dumps(
                        {
                            "id": op_id,
                            "type": "subscribe",
                            "payload": {"query": query, "variables": variables or {}},
                        }
                    )
                )
                async for raw in ws:
                    message = json.loads(raw)
                    if message.get("type") == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                        continue
                    if message.get("id") != op_id:
                        continue
                    if message["type"] == "next":
                        _raise_errors(message["payload"])
                        yield message["payload"]["data"]
                    elif message["type"] == "error":
                        _raise_errors({"errors": message["payload"]})
                    elif message["type"] == "complete":
                        return
        except OSError as exc:
            raise ClientError(f"cannot reach {ws_url}: {exc}") from exc

    async def download(self, url: str, target: Path) -> None:
        """Save a media URL to ``target``."""
        async with self._http.stream("GET", url) as response:
            if response.status_code != 200:
                raise ClientError(f"HTTP {response.status_code} for {url}", "DOWNLOAD_FAILED")
            with target.open("wb") as handle:
                async for chunk in response.aiter_bytes():
                    handle.write(chunk)


def _raise_errors(body: dict[str, Any]) -> None:
    errors = body.get("errors")
    if errors:
        first = errors[0]
        code = (first.get("extensions") or {}).get("code", "ERROR")
        raise ClientError(first.get("message", "error"), code)
