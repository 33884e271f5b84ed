"""What one document may cost the api: checking it takes time linear in its size (fragments
that spread one another are measured once), bodies are capped before they are parsed, and
the cache of parsed documents is bounded in bytes. Each is tried against a running api."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from graphql import parse

from gql_media.api.security import DocumentCache
from tests.support import LiveServer


def fragment_chain(n: int, leaf: str = "__typename", each: str = "") -> str:
    """A document of ``n`` fragments, each spreading the next twice: 2^n paths to walk
    when fragments are followed where they are spread."""
    parts = ["query Chain { ...f0 }"]
    parts += [f"fragment f{i} on Query {{ ...f{i + 1} ...f{i + 1} {each} }}" for i in range(n)]
    parts.append(f"fragment f{n} on Query {{ {leaf} }}")
    return "\n".join(parts)


@pytest.fixture
async def live(server: LiveServer) -> AsyncIterator[LiveServer]:
    yield server


async def codes(live: LiveServer, query: str) -> list[str]:
    response = await live.http.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    return [error["extensions"]["code"] for error in response.json().get("errors", [])]


async def test_fragment_chains_are_refused_at_once_whatever_their_length(
    live: LiveServer,
) -> None:
    # n=21 took 21 s of the event loop when fragments were walked where spread; n=60 would
    # take centuries, so finishing within the test's timeout is the bound
    cases = [
        (fragment_chain(21), "QUERY_TOO_COSTLY"),
        (fragment_chain(60), "QUERY_TOO_COSTLY"),
        (fragment_chain(150), "QUERY_TOO_COSTLY"),
        (fragment_chain(60, each="a: __typename"), "TOO_MANY_ALIASES"),
    ]
    assert len(cases[0][0]) < 900
    served = await asyncio.gather(
        *(codes(live, query) for query, _ in cases), codes(live, "{ __typename }")
    )
    for (query, expected), found in zip(cases, served, strict=False):
        assert expected in found, (query[:40], found)
    assert served[-1] == []


async def test_fragments_count_where_they_are_spread(live: LiveServer) -> None:
    """Measuring each fragment once changes nothing for documents within the limits: a
    fragment spread twice counts twice."""
    fields = "edges { node { id status prompt progress outputs { url width height } } }"
    under = f"query {{ jobs(first: 100) {{ ...p }} }} fragment p on JobConnection {{ {fields} }}"
    assert await codes(live, under) == []
    twice = (
        "query { a: jobs(first: 100) { ...p } b: jobs(first: 100) { ...p } "
        "c: jobs(first: 100) { ...p } d: jobs(first: 100) { ...p } e: jobs(first: 100) { ...p } "
        "f: jobs(first: 100) { ...p } g: jobs(first: 100) { ...p } h: jobs(first: 100) { ...p } "
        "i: jobs(first: 100) { ...p } j: jobs(first: 100) { ...p } k: jobs(first: 100) { ...p } } "
        f"fragment p on JobConnection {{ {fields} }}"
    )
    assert await codes(live, twice) == ["QUERY_TOO_COSTLY"]
    cycle = "query { ...a } fragment a on Query { ...b } fragment b on Query { ...a }"
    assert await codes(live, cycle) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_depth_counts_through_fragments(settings_factory: Any) -> None:
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    settings = settings_factory(max_query_depth=2)
    async with start_server(settings, redis_adapter.new_fake_server(), with_worker=False) as live:
        shallow = (
            "{ jobs { ...c } } fragment c on JobConnection { totalCount pageInfo { hasNextPage } }"
        )
        deep = "{ jobs { ...c } } fragment c on JobConnection { edges { node { id } } }"
        assert await codes(live, shallow) == []
        assert await codes(live, deep) == ["QUERY_TOO_DEEP"]


async def test_bodies_are_capped_before_they_are_parsed(settings_factory: Any) -> None:
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    settings = settings_factory(max_body_bytes=64 * 1024)
    async with start_server(settings, redis_adapter.new_fake_server(), with_worker=False) as live:
        # comments and whitespace count, though the token cap does not see them
        padded = "# " + "x" * (70 * 1024) + "\n{ __typename }"
        response = await live.http.post("/graphql", json={"query": padded})
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            body = json.dumps({"query": padded}).encode()
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        streamed = await live.http.post(
            "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
        lying = await _raw(
            live,
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000000000\r\n\r\n{"query": "{ __typename }"}',
        )
        assert lying.startswith(b"HTTP/1.1 413"), lying[:80]
        # a GET's document is in its URL: the request line counts toward the headers' cap
        target = "/graphql?" + urlencode({"query": padded})  # too long for httpx's URLs
        by_get = await _raw(live, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert by_get.startswith(b"HTTP/1.1 431"), by_get[:80]
        assert b"HEADERS_TOO_LARGE" in by_get
        under = "# " + "x" * (30 * 1024) + "\n{ __typename }"
        ok = await live.http.post("/graphql", json={"query": under})
        assert ok.json() == {"data": {"__typename": "Query"}}


async def _raw(live: LiveServer, request: bytes) -> bytes:
    """The start of the answer to a request sent as these bytes."""
    host, port = httpx.URL(live.url).host, httpx.URL(live.url).port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


async def test_the_document_cache_is_bounded_in_bytes(settings_factory: Any) -> None:
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    budget = 256 * 1024
    settings = settings_factory(document_cache_bytes=budget, max_body_bytes=1024 * 1024)
    async with start_server(settings, redis_adapter.new_fake_server(), with_worker=False) as live:
        cache = live.app.graphql_view.schema.documents
        for i in range(60):  # 60 distinct documents of about 12 KB each
            query = f"# {i}\n# " + "y" * 12_000 + "\n{ __typename }"
            response = await live.http.post("/graphql", json={"query": query})
            assert response.json() == {"data": {"__typename": "Query"}}
            assert cache.size <= budget
        assert 0 < len(cache) < 60
        big = "# " + "z" * (budget // 8) + "\n{ __typename }"  # over a sixteenth: not kept
        before = len(cache)
        assert (await live.http.post("/graphql", json={"query": big})).status_code == 200
        assert len(cache) == before


def test_document_cache_drops_the_least_recently_used_first() -> None:
    cache = DocumentCache(budget=1000)
    document = parse("{ __typename }")
    texts = [f"{{ __typename }} # {i:02d} " + "." * 40 for i in range(30)]
    for text in texts:
        cache.add(text, (), document)
        assert cache.size <= 1000
    assert cache.get(texts[0], ()) is None and cache.get(texts[-1], ()) is not None
    kept = len(cache)
    assert cache.get(texts[-kept], ()) is not None  # now the most recently used
    cache.add("{ __typename } # new " + "." * 40, (), document)
    assert cache.get(texts[-kept], ()) is not None and cache.get(texts[-kept + 1], ()) is None


@pytest.mark.parametrize("introspection", [True, False])
async def test_suggestions_are_off_whenever_introspection_is(
    settings_factory: Any, introspection: bool
) -> None:
    """ "Did you mean …?" would name the schema's fields to a server that hides them."""
    from gql_media.adapters import redis as redis_adapter
    from tests.support import start_server

    settings = settings_factory(introspection=introspection)
    async with start_server(settings, redis_adapter.new_fake_server(), with_worker=False) as live:
        typo = await live.http.post("/graphql", json={"query": "{ jbos { totalCount } }"})
        coerced = await live.http.post(
            "/graphql",
            json={
                "query": "mutation($i: GenerateImageInput!) { generateImage(input: $i) "
                "{ userErrors { code } } }",
                "variables": {"i": {"promt": "a kite"}},
            },
        )
    messages = [e["message"] for r in (typo, coerced) for e in r.json()["errors"]]
    assert any("'jbos'" in m for m in messages) and any("'promt'" in m for m in messages)
    hinted = [m for m in messages if "Did you mean" in m]
    assert len(hinted) == 2 if introspection else not hinted, messages


async def test_malformed_bodies_get_a_4xx_with_a_code(live: LiveServer) -> None:
    upload = "mutation($f: Upload!) { uploadMedia(file: $f) { userErrors { code } } }"
    operations = json.dumps({"query": upload, "variables": {"f": None}})
    image = ("a.jpg", b"not really", "image/jpeg")
    maps = {
        "not json": "{nope",
        "a list": "[1, 2]",
        "a path that is a number": json.dumps({"0": [5]}),
        "a path that is a string": json.dumps({"0": "variables.f"}),
        "a path into a string": json.dumps({"0": ["query.x"]}),
        "a list index that is a word": json.dumps({"0": ["variables.f.x.y"]}),
        "a path into nothing": json.dumps({"0": ["variables.g.h.i"]}),
        "a file that is not sent": json.dumps({"1": ["variables.f"]}),
    }
    preflight = {"GraphQL-Require-Preflight": "1"}
    for name, files_map in maps.items():
        response = await live.http.post(
            "/graphql",
            files={"operations": (None, operations), "map": (None, files_map), "0": image},
            headers=preflight,
        )
        assert response.status_code == 400, (name, response.text)
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST", name
    for name, body in {
        "arrays nested past the parser's stack": b"[" * 100_000 + b"]" * 100_000,
        "objects nested past the parser's stack": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "not JSON": b"\xff\xfe",
        "a bare number": b"12",
    }.items():
        response = await live.http.post(
            "/graphql", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (name, response.text)
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST", name
