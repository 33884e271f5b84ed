"""Trusted documents (``GQL_MEDIA_TRUSTED_DOCUMENTS``): documents sent by id over HTTP
(POST and GET) and WebSocket (both protocols), unknown ids, strict mode, and manifests the
api refuses to start with. Real uvicorn servers, real sockets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gql_media.api.app import create_app
from gql_media.api.trusted import ManifestError
from gql_media.settings import Settings
from tests.support import LiveServer, graphql_ws, start_server

PROVIDERS = "query Providers { providers { name } }"
GENERATE = (
    "mutation Generate($input: GenerateImageInput!) { generateImage(input: $input) "
    "{ job { id status } userErrors { code } } }"
)
FOLLOW = "subscription Follow($id: ID!) { jobUpdated(id: $id) { id status } }"
UNLISTED = "query Unlisted { providers { name configured } }"


def document_id(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_manifest(path: Path, *texts: str) -> Path:
    """A manifest as GraphQL Code Generator's client preset writes it."""
    path.write_text(json.dumps({document_id(text): text for text in texts}))
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "persisted-documents.json", PROVIDERS, GENERATE, FOLLOW)


async def serve(settings: Settings, fake_redis_server: Any) -> AsyncIterator[LiveServer]:
    async with start_server(settings, fake_redis_server, with_worker=True) as live:
        yield live


@pytest.fixture
async def listed(
    settings_factory: Any, manifest: Path, fake_redis_server: Any
) -> AsyncIterator[LiveServer]:
    """Documents may be sent by id; any other document runs too."""
    settings = settings_factory(trusted_documents=manifest)
    async for live in serve(settings, fake_redis_server):
        yield live


@pytest.fixture
async def strict(
    settings_factory: Any, manifest: Path, fake_redis_server: Any
) -> AsyncIterator[LiveServer]:
    """Only the manifest's documents run."""
    settings = settings_factory(trusted_documents=manifest, trusted_documents_strict=True)
    async for live in serve(settings, fake_redis_server):
        yield live


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def post(live: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    response = await live.http.post("/graphql", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# -- by id ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "naming",
    [
        {"documentId": document_id(PROVIDERS)},
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": document_id(PROVIDERS)}}},
        # Apollo's link sends the bare hex digest
        {
            "extensions": {
                "persistedQuery": {"version": 1, "sha256Hash": document_id(PROVIDERS)[7:]}
            }
        },
    ],
    ids=["documentId", "persistedQuery-prefixed", "persistedQuery-bare"],
)
async def test_a_listed_document_runs_by_its_id(listed: LiveServer, naming: dict[str, Any]) -> None:
    body = await post(listed, naming)
    assert "errors" not in body, body
    assert {"name": "mock"} in body["data"]["providers"]


async def test_a_mutation_by_id_takes_its_variables(strict: LiveServer) -> None:
    body = await post(
        strict,
        {"documentId": document_id(GENERATE), "variables": {"input": {"prompt": "a fox"}}},
    )
    assert body["data"]["generateImage"]["userErrors"] == [], body
    assert body["data"]["generateImage"]["job"]["status"] == "QUEUED"


async def test_a_get_names_a_document_by_id(strict: LiveServer) -> None:
    response = await strict.http.get(
        "/graphql", params={"documentId": document_id(PROVIDERS), "variables": "{}"}
    )
    assert response.status_code == 200, response.text
    assert {"name": "mock"} in response.json()["data"]["providers"]


async def test_variables_named_like_a_request_are_only_variables(listed: LiveServer) -> None:
    """A GET's variables are read as JSON too: a variable called documentId names nothing."""
    response = await listed.http.get(
        "/graphql",
        params={"query": PROVIDERS, "variables": json.dumps({"documentId": document_id(FOLLOW)})},
    )
    assert {"name": "mock"} in response.json()["data"]["providers"], response.text


async def test_an_unknown_id_is_persisted_query_not_found(listed: LiveServer) -> None:
    for naming in (
        {"documentId": "sha256:" + "0" * 64},
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "f" * 64}}},
    ):
        body = await post(listed, naming)
        assert codes(body) == ["PERSISTED_QUERY_NOT_FOUND"], body
        assert "data" not in body
        # Apollo's and urql's links look for this message before sending the document
        assert body["errors"][0]["message"].startswith("PersistedQueryNotFound")


async def test_a_subscription_by_id_over_both_websocket_protocols(listed: LiveServer) -> None:
    job = await post(
        listed, {"documentId": document_id(GENERATE), "variables": {"input": {"prompt": "x"}}}
    )
    job_id = job["data"]["generateImage"]["job"]["id"]
    async with graphql_ws(listed.ws_url) as ws:
        await ws.send(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"documentId": document_id(FOLLOW), "variables": {"id": job_id}},
            }
        )
        payloads = await ws.collect("1")
    assert payloads[-1]["data"]["jobUpdated"] == {"id": job_id, "status": "SUCCEEDED"}
    async with graphql_ws(listed.ws_url, protocol="graphql-ws") as legacy:
        persisted = {"persistedQuery": {"version": 1, "sha256Hash": document_id(FOLLOW)}}
        await legacy.send(
            {
                "id": "1",
                "type": "start",
                "payload": {"extensions": persisted, "variables": {"id": job_id}},
            }
        )
        message = await legacy.receive()
    assert message["type"] == "data", message
    assert message["payload"]["data"]["jobUpdated"]["status"] == "SUCCEEDED"


async def test_an_unknown_id_over_websocket_is_an_operation_error(listed: LiveServer) -> None:
    async with graphql_ws(listed.ws_url) as ws:
        await ws.send(
            {"id": "1", "type": "subscribe", "payload": {"documentId": "sha256:" + "1" * 64}}
        )
        message = await ws.receive()
        assert message["type"] == "error" and message["id"] == "1", message
        assert message["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        # the socket stays usable
        op = await ws.subscribe(PROVIDERS)
        [result] = await ws.collect(op)
    assert {"name": "mock"} in result["data"]["providers"]


# -- strict ---------------------------------------------------------------------------------


async def test_without_strict_any_document_runs(listed: LiveServer) -> None:
    body = await post(listed, {"query": UNLISTED})
    assert "errors" not in body, body


async def test_strict_runs_the_manifests_documents_sent_as_text(strict: LiveServer) -> None:
    body = await post(strict, {"query": PROVIDERS})
    assert "errors" not in body, body


@pytest.mark.parametrize(
    "text",
    [UNLISTED, PROVIDERS + " ", "{ __schema { types { name } } }", "{" * 5000],
    ids=["unlisted", "listed-plus-a-space", "introspection", "unparseable"],
)
async def test_strict_refuses_every_other_document_before_parsing(
    strict: LiveServer, text: str
) -> None:
    body = await post(strict, {"query": text})
    assert codes(body) == ["DOCUMENT_NOT_TRUSTED"], body
    assert body.get("data") is None


async def test_strict_refuses_unlisted_documents_over_websocket(strict: LiveServer) -> None:
    async with graphql_ws(strict.ws_url) as ws:
        op = await ws.subscribe("subscription { jobEvents { id } }")
        message = await ws.receive()
    assert message["id"] == op, message
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert [error["extensions"]["code"] for error in errors] == ["DOCUMENT_NOT_TRUSTED"]


async def test_a_malformed_id_is_a_clear_error_not_a_crash(strict: LiveServer) -> None:
    for body in (
        {"documentId": 12},
        {"documentId": ""},
        {"extensions": {"persistedQuery": "abc"}},
        {"extensions": {"persistedQuery": {"sha256Hash": ["x"]}}},
        {"documentId": "sha256:" + "a" * 100_000},
    ):
        response = await strict.http.post("/graphql", json=body)
        assert response.status_code in (200, 400), response.text
        found = codes(response.json())
        assert found in (["BAD_REQUEST"], ["PERSISTED_QUERY_NOT_FOUND"]), (body, response.text)


# -- configuration --------------------------------------------------------------------------


def test_strict_needs_a_manifest() -> None:
    with pytest.raises(ValidationError, match="GQL_MEDIA_TRUSTED_DOCUMENTS"):
        Settings(trusted_documents_strict=True)


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"sha256:ab": 3}', '{"sha256:ab": "  "}'],
    ids=["not-json", "a-list", "a-number", "blank"],
)
def test_a_manifest_the_api_cannot_read_stops_it_at_start_up(tmp_path: Path, content: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match="trusted documents"):
        create_app(Settings(data_dir=tmp_path, trusted_documents=path))
    with pytest.raises(ManifestError, match="cannot read"):
        create_app(Settings(data_dir=tmp_path, trusted_documents=tmp_path / "missing.json"))


async def test_strict_refuses_an_unlisted_document_in_a_multipart_upload(
    strict: LiveServer,
) -> None:
    """The upload form's operations are a request too: read, and refused, like a body."""
    upload = "mutation($f: Upload!) { uploadMedia(file: $f) { media { id } } }"
    response = await strict.http.post(
        "/graphql",
        headers={"GraphQL-Require-Preflight": "1"},
        data={
            "operations": json.dumps({"query": upload, "variables": {"f": None}}),
            "map": json.dumps({"0": ["variables.f"]}),
        },
        files={"0": ("photo.jpg", b"\xff\xd8\xff" + b"0" * 64, "image/jpeg")},
    )
    assert codes(response.json()) == ["DOCUMENT_NOT_TRUSTED"], response.text
