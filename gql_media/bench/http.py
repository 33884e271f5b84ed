"""A lean HTTP/1.1 keep-alive client for driving load, and the GraphQL calls the bench makes.

A general client (httpx) spends more CPU per request than the api does on this path; on a
small machine the load generator would then measure itself. This one writes a request and
reads one response per round trip on a persistent connection, nothing more.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

GENERATE = (
    "mutation($input: GenerateImageInput!) { generateImage(input: $input) "
    "{ job { id status } userErrors { code message } } }"
)
PENDING = "query($filter: JobFilter) { jobs(filter: $filter, first: 1) { totalCount } }"


class HttpError(Exception):
    """The server answered with something that is not a usable HTTP response."""


class Connection:
    """One persistent HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, headers: bytes) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._headers = headers
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._tls
            )
        return self._reader, self._writer

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """(status, body); reconnects once when a kept-alive connection was closed."""
        fresh = self._reader is None
        try:
            return await self._exchange(method, path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if fresh:
                raise
        return await self._exchange(method, path, body)

    async def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._open()
        head = (
            f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode()
            + self._headers
            + b"\r\n"
        )
        writer.write(head + body)
        status_line, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = await _read_chunked(reader)
        else:
            content = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status_line, content

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


@dataclass(frozen=True)
class Submitted:
    """One generateImage round trip as the client saw it (perf_counter seconds)."""

    sent: float
    answered: float
    job_id: str | None
    error: str | None

    @property
    def latency_ms(self) -> float:
        return (self.answered - self.sent) * 1000


class Api:
    """GraphQL over HTTP against ``base_url`` (the api's origin), on pooled connections."""

    def __init__(self, base_url: str, key: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url.removeprefix("http") + "/graphql"
        self._root = parts.path.rstrip("/")
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        port = parts.port or (443 if tls else 80)
        headers = f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n"
        if key:
            headers += f"Authorization: Bearer {key}\r\n"
        self._address = (parts.hostname or "", port, tls, headers.encode())
        self._idle: list[Connection] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        connection = self._idle.pop() if self._idle else Connection(*self._address)
        try:
            result = await connection.request(method, self._root + path, body)
        except BaseException:
            connection.close()
            raise
        self._idle.append(connection)
        return result

    async def warm(self, connections: int) -> None:
        """Open ``connections`` connections now, so no timed request pays for a handshake."""
        await asyncio.gather(*(self.request("GET", "/healthz") for _ in range(connections)))

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        status, content = await self.request(
            "POST", "/graphql", orjson.dumps({"query": query, "variables": variables or {}})
        )
        if status != 200:
            raise HttpError(f"HTTP {status}: {content[:200]!r}")
        body = orjson.loads(content)
        if body.get("errors"):
            raise HttpError(str(body["errors"][0].get("message")))
        return body["data"]

    async def submit(self, extra: dict[str, Any] | None = None, prompt: str = "bench") -> Submitted:
        """Queue one instant ``mock`` job; errors are reported, not raised."""
        variables = {
            "input": {
                "prompt": prompt,
                "provider": "mock",
                "width": 64,
                "height": 64,
                "extra": {"delayMs": 0, "steps": 1, **(extra or {})},
            }
        }
        body = orjson.dumps({"query": GENERATE, "variables": variables})
        sent = time.perf_counter()
        try:
            status, content = await self.request("POST", "/graphql", body)
        except (OSError, asyncio.IncompleteReadError, HttpError) as exc:
            return Submitted(sent, time.perf_counter(), None, f"{type(exc).__name__}: {exc}")
        answered = time.perf_counter()
        if status != 200:
            return Submitted(sent, answered, None, f"HTTP {status}")
        data = orjson.loads(content)
        if data.get("errors"):
            return Submitted(sent, answered, None, str(data["errors"][0].get("message")))
        payload = data["data"]["generateImage"]
        if payload["userErrors"]:
            return Submitted(sent, answered, None, payload["userErrors"][0]["code"])
        return Submitted(sent, answered, payload["job"]["id"], None)

    async def unfinished(self, created_after: str) -> int:
        """How many ``mock`` jobs created after ``created_after`` are QUEUED or RUNNING."""
        variables = {
            "filter": {
                "status": ["QUEUED", "RUNNING"],
                "provider": "mock",
                "createdAfter": created_after,
            }
        }
        return int((await self.graphql(PENDING, variables))["jobs"]["totalCount"])

    async def wait_idle(self, created_after: str, timeout: float) -> bool:
        """Poll until no bench job is unfinished; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while await self.unfinished(created_after):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
