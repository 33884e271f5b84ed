"""Real clients against the running api: the graphql-ws npm client under Node, the Python
gql client, and TypeScript types made by GraphQL Code Generator from schema.graphql.

The Node side lives in tests/clients (``npm ci`` there installs it; .ci/run does). Its tools
are called from node_modules/.bin, so nothing is downloaded while the tests run. As in
test_subscriptions.py, jobs are created on an api without a worker and wait in QUEUED until
the client has seen them; then a worker starts, so every state reaches the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gql import Client, FileVar, GraphQLRequest
from gql.transport.exceptions import TransportConnectionFailed
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed

from gql_media.adapters import redis as redis_adapter
from gql_media.runtime import Runtime, open_runtime
from gql_media.services import auth
from gql_media.settings import Settings
from gql_media.worker.main import running_worker
from tests.media import jpeg
from tests.support import LiveServer, start_server

ROOT = Path(__file__).parent.parent
CLIENTS = Path(__file__).parent / "clients"
BIN = CLIENTS / "node_modules" / ".bin"
NODE = shutil.which("node")
TIMEOUT = 30.0

STEPPED = {"provider": "mock", "numOutputs": 2, "extra": {"delayMs": 400, "steps": 4}}

GENERATE = """
mutation Generate($input: GenerateImageInput!) {
  generateImage(input: $input) { job { id status version } userErrors { field code message } }
}
"""
FOLLOW = """
subscription Follow($id: ID!) {
  jobUpdated(id: $id) { id status progress version outputs { url contentType width height } }
}
"""
JOBS = """
query Jobs($filter: JobFilter, $first: Int, $after: String) {
  jobs(filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id status provider } }
  }
}
"""
UPLOAD = """
mutation Upload($file: Upload!) {
  uploadMedia(file: $file) { media { id contentType width height filename } userErrors { code } }
}
"""


def _node_missing() -> str | None:
    if NODE is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    needed = [BIN / "graphql-codegen", BIN / "tsc", CLIENTS / "node_modules" / "graphql-ws"]
    if not all(path.exists() for path in needed):
        return "tests/clients/node_modules is not installed: run `npm ci` in tests/clients"
    return None


needs_node = pytest.mark.skipif(_node_missing() is not None, reason=_node_missing() or "")


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def api(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    """The api without a worker; tests start one with ``running_worker(runtime)``."""
    async with start_server(settings, fake_redis_server, with_worker=False) as live:
        yield live


@dataclass
class Secured:
    live: LiveServer
    runtime: Runtime
    key: str


@pytest.fixture
async def secured(settings_factory: Any) -> AsyncIterator[Secured]:
    """The api with auth required and one key, without a worker."""
    settings = settings_factory(auth="required", secret_key="test-secret", rate_limit_per_minute=0)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with open_runtime(settings, fake) as runtime:
        _, key = await auth.create_key(runtime.deps, "client-tests")
        async with start_server(settings, fake, with_worker=False) as live:
            yield Secured(live, runtime, key)


# -- what every client must see -----------------------------------------------------------


def statuses(updates: list[dict[str, Any]]) -> list[str]:
    """The distinct statuses in order (progress updates repeat RUNNING)."""
    return [status for status, _ in itertools.groupby(update["status"] for update in updates)]


def assert_followed_to_success(updates: list[dict[str, Any]], outputs: int) -> None:
    assert statuses(updates) == ["QUEUED", "RUNNING", "SUCCEEDED"], updates
    versions = [update["version"] for update in updates]
    assert versions == sorted(set(versions)), versions
    progress = [update["progress"] for update in updates]
    assert progress == sorted(progress) and progress[-1] == 1, progress
    final = updates[-1]["outputs"]
    assert len(final) == outputs, final
    assert all(o["url"] and o["contentType"] == "image/png" for o in final), final


# -- graphql-ws under Node ----------------------------------------------------------------


@dataclass
class NodeFollower:
    """tests/clients/follow.mjs running as a subprocess: one JSON line per update."""

    process: asyncio.subprocess.Process

    async def next_update(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        assert line, "follow.mjs exited before printing an update"
        update: dict[str, Any] = json.loads(line)
        return update

    async def finish(self) -> tuple[int, list[dict[str, Any]], str]:
        """Exit code, the remaining updates, and stderr."""
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), TIMEOUT)
        updates = [json.loads(line) for line in stdout.decode().splitlines()]
        assert self.process.returncode is not None
        return self.process.returncode, updates, stderr.decode()

    async def succeed(self) -> list[dict[str, Any]]:
        code, updates, stderr = await self.finish()
        assert code == 0, stderr
        return updates


@asynccontextmanager
async def follow_with_node(
    url: str, *args: str, script: str = "follow.mjs"
) -> AsyncIterator[NodeFollower]:
    """Run one of tests/clients' scripts against ``url`` (its --url)."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        script,
        "--url",
        url,
        *args,
        cwd=CLIENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeFollower(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def create(live: LiveServer, **fields: Any) -> str:
    payload = await live.generate(**fields)
    assert payload["userErrors"] == [], payload
    return str(payload["job"]["id"])


@needs_node
async def test_graphql_ws_under_node_follows_a_job_through_every_state(
    api: LiveServer, runtime: Runtime
) -> None:
    job_id = await create(api, **STEPPED)
    async with follow_with_node(api.ws_url, "--job", job_id) as node:
        first = await node.next_update()
        assert (first["id"], first["status"], first["version"]) == (job_id, "QUEUED", 1)
        async with running_worker(runtime):
            rest = await node.succeed()
    assert_followed_to_success([first, *rest], outputs=2)


@needs_node
async def test_graphql_ws_under_node_submits_and_follows_on_a_working_server(
    server: LiveServer,
) -> None:
    job = json.dumps({"prompt": "a lighthouse at dusk", "width": 64, "height": 64})
    async with follow_with_node(server.ws_url, "--generate", job) as node:
        updates = await node.succeed()
    # The worker may finish before the client subscribes: then it sees only the end.
    seen = statuses(updates)
    assert seen == [s for s in ("QUEUED", "RUNNING", "SUCCEEDED") if s in seen], updates
    assert updates[-1]["status"] == "SUCCEEDED" and updates[-1]["progress"] == 1
    [output] = updates[-1]["outputs"]
    download = await server.http.get(output["url"])
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"


@needs_node
async def test_graphql_ws_under_node_sends_an_api_key(secured: Secured) -> None:
    job = json.dumps({"prompt": "a quiet harbour", **STEPPED})
    ws_url = secured.live.ws_url
    async with follow_with_node(ws_url, "--key", secured.key, "--generate", job) as node:
        first = await node.next_update()
        assert first["status"] == "QUEUED"
        async with running_worker(secured.runtime):
            rest = await node.succeed()
    assert_followed_to_success([first, *rest], outputs=2)


@needs_node
async def test_graphql_ws_under_node_reports_a_wrong_key_as_4403(secured: Secured) -> None:
    job_id = "job_" + "0" * 32
    ws_url = secured.live.ws_url
    async with follow_with_node(ws_url, "--key", "gqlm_wrong", "--job", job_id) as node:
        code, updates, stderr = await node.finish()
    assert (code, updates) == (1, [])
    assert "close code 4403" in stderr, stderr


# -- Apollo Client and urql under Node --------------------------------------------------


async def follow_with_apollo(
    live: LiveServer, runtime: Runtime, job_id: str, *args: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """apollo.mjs follows ``job_id``; a worker starts once the QUEUED result arrived.
    Returns the jobUpdated results and the lines printed after them."""
    url = f"{live.url}/graphql"
    async with follow_with_node(url, "--job", job_id, *args, script="apollo.mjs") as node:
        first = await node.next_update()
        assert (first["id"], first["status"]) == (job_id, "QUEUED"), first
        async with running_worker(runtime):
            lines = await node.succeed()
    updates = [first, *(line for line in lines if "status" in line)]
    return updates, [line for line in lines if "status" not in line]


@needs_node
@pytest.mark.parametrize("transport", ["ws", "multipart"])
async def test_apollo_client_follows_a_job_into_its_normalised_cache(
    api: LiveServer, runtime: Runtime, transport: str
) -> None:
    job_id = await create(api, **STEPPED)
    updates, after = await follow_with_apollo(api, runtime, job_id, "--transport", transport)
    assert_followed_to_success(updates, outputs=2)
    assert {update["__typename"] for update in updates} == {"Job"}
    # job(id:) answered with no request, from the Job the subscription wrote into the cache
    [cached] = after
    assert cached["cached"] == updates[-1]


@needs_node
async def test_apollo_client_pages_jobs_with_relay_style_pagination(
    api: LiveServer, runtime: Runtime
) -> None:
    older = [await create(api, prompt=f"older {n}", provider="mock") for n in range(2)]
    job_id = await create(api, **STEPPED)
    _, after = await follow_with_apollo(api, runtime, job_id, "--pages", "3")
    [_, paged] = after
    newest_first = [job_id, *reversed(older)]
    assert paged["pages"] == [[job_id] for job_id in newest_first]  # one per page
    assert paged["merged"] == newest_first  # fetchMore appended each page to one list


@needs_node
async def test_apollo_client_sends_an_api_key(secured: Secured) -> None:
    job_id = await create_as(secured, **STEPPED)
    updates, _ = await follow_with_apollo(
        secured.live, secured.runtime, job_id, "--key", secured.key
    )
    assert_followed_to_success(updates, outputs=2)


@needs_node
async def test_urql_submits_follows_and_reads_a_job(api: LiveServer, runtime: Runtime) -> None:
    url = f"{api.url}/graphql"
    async with follow_with_node(url, "--prompt", "a red fox", script="urql.mjs") as node:
        created = (await node.next_update())["created"]
        first = await node.next_update()
        assert (first["id"], first["status"]) == (created, "QUEUED"), first
        async with running_worker(runtime):
            lines = await node.succeed()
    *rest, read = lines
    assert_followed_to_success([first, *rest], outputs=1)
    assert read["job"]["status"] == "SUCCEEDED"
    assert read["job"]["outputs"] == [
        {k: o[k] for k in ("url", "contentType")} for o in rest[-1]["outputs"]
    ]


@needs_node
async def test_urql_with_a_wrong_key_is_refused(secured: Secured) -> None:
    url = f"{secured.live.url}/graphql"
    async with follow_with_node(
        url, "--key", "gqlm_wrong", "--prompt", "x", script="urql.mjs"
    ) as node:
        code, lines, stderr = await node.finish()
    assert (code, lines) == (1, [])
    assert "UNAUTHENTICATED" in stderr, stderr


async def create_as(secured: Secured, **fields: Any) -> str:
    fields.setdefault("prompt", "a quiet harbour")
    headers = {"Authorization": f"Bearer {secured.key}"}
    response = await secured.live.http.post(
        "/graphql", json={"query": GENERATE, "variables": {"input": fields}}, headers=headers
    )
    payload = response.json()["data"]["generateImage"]
    assert payload["userErrors"] == [], payload
    return str(payload["job"]["id"])


# -- Python gql ---------------------------------------------------------------------------


def http_client(live: LiveServer, key: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = HTTPXAsyncTransport(url=f"{live.url}/graphql", headers=headers, timeout=10)
    # With the schema, gql validates every document locally before sending it.
    return Client(transport=transport, schema=(ROOT / "schema.graphql").read_text())


def ws_client(live: LiveServer, key: str | None = None) -> Client:
    transport = WebsocketsTransport(
        url=live.ws_url,
        init_payload={"authorization": f"Bearer {key}"} if key else {},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    return Client(transport=transport, schema=(ROOT / "schema.graphql").read_text())


async def generate_with_gql(live: LiveServer, key: str | None = None, **fields: Any) -> str:
    async with http_client(live, key) as session:
        result = await session.execute(GraphQLRequest(GENERATE, variable_values={"input": fields}))
    payload = result["generateImage"]
    assert payload["userErrors"] == [] and payload["job"]["status"] == "QUEUED", payload
    return str(payload["job"]["id"])


async def follow_with_gql(
    live: LiveServer, runtime: Runtime, job_id: str, key: str | None = None
) -> list[dict[str, Any]]:
    """Subscribe, and start a worker once the QUEUED snapshot has arrived."""
    async with ws_client(live, key) as session:
        stream = session.subscribe(GraphQLRequest(FOLLOW, variable_values={"id": job_id}))
        first = (await anext(stream))["jobUpdated"]
        assert first["status"] == "QUEUED"
        async with running_worker(runtime):
            rest = [result["jobUpdated"] async for result in stream]
    return [first, *rest]


async def test_python_gql_generates_then_follows(api: LiveServer, runtime: Runtime) -> None:
    job_id = await generate_with_gql(api, prompt="a lighthouse at dusk", **STEPPED)
    updates = await follow_with_gql(api, runtime, job_id)
    assert {update["id"] for update in updates} == {job_id}
    assert_followed_to_success(updates, outputs=2)


async def test_python_gql_pages_jobs_with_variables(api: LiveServer) -> None:
    older = await generate_with_gql(api, prompt="one", provider="mock")
    newer = await generate_with_gql(api, prompt="two", provider="mock")
    await generate_with_gql(api, prompt="three", provider="local")
    variables: dict[str, Any] = {"filter": {"status": ["QUEUED"], "provider": "mock"}, "first": 1}
    pages = []
    async with http_client(api) as session:
        while True:
            page = (await session.execute(GraphQLRequest(JOBS, variable_values=variables)))["jobs"]
            pages.append(page)
            if not page["pageInfo"]["hasNextPage"]:
                break
            variables["after"] = page["pageInfo"]["endCursor"]
    assert [page["totalCount"] for page in pages] == [2, 2]
    assert [edge["node"]["id"] for page in pages for edge in page["edges"]] == [newer, older]


async def test_python_gql_uploads_with_the_preflight_header(api: LiveServer) -> None:
    transport = HTTPXAsyncTransport(
        url=f"{api.url}/graphql", headers={"GraphQL-Require-Preflight": "1"}, timeout=10
    )
    photo = FileVar(io.BytesIO(jpeg(96, 64)), filename="photo.jpg", content_type="image/jpeg")
    request = GraphQLRequest(UPLOAD, variable_values={"file": photo})
    async with Client(transport=transport) as session:
        result = await session.execute(request, upload_files=True)
    payload = result["uploadMedia"]
    assert payload["userErrors"] == [], payload
    media = payload["media"]
    assert (media["contentType"], media["width"], media["height"]) == ("image/jpeg", 96, 64)
    assert media["filename"] == "photo.jpg"


async def test_python_gql_sends_an_api_key(secured: Secured) -> None:
    job_id = await generate_with_gql(secured.live, secured.key, prompt="a harbour", **STEPPED)
    updates = await follow_with_gql(secured.live, secured.runtime, job_id, secured.key)
    assert_followed_to_success(updates, outputs=2)
    with pytest.raises(TransportConnectionFailed) as refused:
        async with ws_client(secured.live, "gqlm_wrong"):
            pass
    closed = refused.value.__cause__
    assert isinstance(closed, ConnectionClosed) and closed.rcvd is not None
    assert closed.rcvd.code == 4403


# -- GraphQL Code Generator and tsc -------------------------------------------------------


def run_node_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / name), *args],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result


@needs_node
def test_codegen_types_the_operations_and_tsc_accepts_a_client_using_them() -> None:
    run_node_tool("graphql-codegen", "--config", "codegen.ts", "--silent")
    generated = (CLIENTS / "generated" / "graphql.ts").read_text()
    for name in (
        "GenerateImageMutation",
        "GenerateImageMutationVariables",
        "JobQuery",
        "JobsQueryVariables",
        "CancelJobMutation",
        "RetryJobMutation",
        "UploadMediaMutationVariables",
        "ProcessImageMutation",
        "ProcessVideoMutation",
        "ProvidersQuery",
        "JobUpdatedSubscription",
        "JobEventsSubscription",
    ):
        assert f"export type {name} =" in generated, name
    assert "createdAt: string" in generated
    assert "file: unknown" in generated and "extra: unknown" in generated
    assert "parameters: unknown" not in generated and "metadata?: unknown" not in generated
    assert "export type ErrorCode =" in generated and "code: ErrorCode" in generated
    assert "NodesQuery" in generated
    # the client preset: typed documents for preset-client.ts, and the persisted documents
    preset = (CLIENTS / "generated" / "client" / "graphql.ts").read_text()
    assert "export type PresetGenerateImageMutation =" in preset
    manifest = json.loads(
        (CLIENTS / "generated" / "client" / "persisted-documents.json").read_text()
    )
    assert len(manifest) == 2
    for hash_, document in manifest.items():
        assert hash_ == "sha256:" + hashlib.sha256(document.encode()).hexdigest()
    # typed-client.ts and preset-client.ts use the generated types, including
    # @ts-expect-error lines that fail the check unless the types really reject those mistakes.
    run_node_tool("tsc", "--noEmit", "-p", "tsconfig.json")


@needs_node
async def test_apollo_sends_the_client_presets_documents_by_hash_to_a_strict_api(
    settings_factory: Any,
) -> None:
    """GraphQL Code Generator's manifest as GQL_MEDIA_TRUSTED_DOCUMENTS, strict: Apollo
    Client's persisted query link sends only each document's hash, and the api runs it."""
    run_node_tool("graphql-codegen", "--config", "codegen.ts", "--silent")
    run_node_tool("tsc", "-p", "tsconfig.persisted.json")  # preset-client.ts into build/
    manifest = CLIENTS / "generated" / "client" / "persisted-documents.json"
    settings = settings_factory(trusted_documents=manifest, trusted_documents_strict=True)
    fake = redis_adapter.new_fake_server() if settings.redis_url is None else None
    async with start_server(settings, fake, with_worker=False) as live:
        url = f"{live.url}/graphql"
        async with follow_with_node(url, "--prompt", "a red fox", script="persisted.mjs") as node:
            [sent] = await node.succeed()
        [request] = sent["requests"]
        assert "query" not in request, request  # the hash alone
        assert request["extensions"]["persistedQuery"]["sha256Hash"] in json.loads(
            manifest.read_text()
        )
        job = await live.graphql(
            "query($id: ID!) { job(id: $id) { status prompt } }", {"id": sent["created"]}
        )
    # anything else, this query too, is refused
    assert job["errors"][0]["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED", job
